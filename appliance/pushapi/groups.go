package pushapi

import (
	"errors"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/token"
)

// The user and group endpoints: GET /v1/users/{user}, POST and GET
// /v1/groups/{group}/members, POST /v1/groups/{group}/stream. Each checks,
// in order: the node ready, the method, for a POST the content type, body
// size and JSON, then the API key against the app, then the values.

// maxGroupBody bounds a group request's body: 1,000 ids of 128 bytes.
const maxGroupBody = 256 << 10

func (h *handler) serveUser(w http.ResponseWriter, r *http.Request) {
	app, aerr := h.getApp(r)
	if aerr != nil {
		api.WriteError(w, aerr)
		return
	}
	user := r.PathValue("user")
	if !token.ValidID(user) {
		api.WriteError(w, api.BadRequest("invalid_field", "user id must be 1-128 letters, digits or ._:-"))
		return
	}
	out, err := h.core.UserState(r.Context(), app.ID(), user)
	if err != nil {
		api.WriteError(w, storeError(err))
		return
	}
	api.WriteJSON(w, http.StatusOK, out)
}

func (h *handler) serveGroupMembers(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	if r.Method == http.MethodGet {
		app, aerr := h.getApp(r)
		if aerr == nil && !token.ValidID(group) {
			aerr = api.BadRequest("invalid_field", "group must be 1-128 letters, digits or ._:-")
		}
		count := 0
		if c := r.URL.Query().Get("count"); aerr == nil && c != "" {
			var err error
			if count, err = strconv.Atoi(c); err != nil || count < 1 || count > 1000 {
				aerr = api.BadRequest("invalid_field", "count %q: 1 to 1000", c)
			}
		}
		if aerr != nil {
			api.WriteError(w, aerr)
			return
		}
		out, err := h.core.GroupState(r.Context(), app.ID(), group, r.URL.Query().Get("cursor"), count)
		if err != nil {
			api.WriteError(w, storeError(err))
			return
		}
		api.WriteJSON(w, http.StatusOK, out)
		return
	}
	var req api.GroupMembersRequest
	app, aerr := h.postApp(r, &req, func() *string { return req.App })
	if aerr == nil {
		aerr = checkGroupMembers(group, &req, h.core.PushLimits().MaxTargets)
	}
	if aerr != nil {
		api.WriteError(w, aerr)
		return
	}
	members := make([]appliance.GroupMember, 0, len(req.Devices)+len(req.Users))
	for _, d := range req.Devices {
		members = append(members, appliance.GroupMember{Device: d})
	}
	for _, u := range req.Users {
		members = append(members, appliance.GroupMember{User: u})
	}
	results, err := h.core.ChangeGroupMembers(r.Context(), app.ID(), group, *req.Op == api.OpAdd, members)
	if err != nil {
		api.WriteError(w, storeError(err))
		return
	}
	api.WriteJSON(w, http.StatusOK, api.GroupMembersResponse{App: app.ID(), Group: group, Results: results})
}

// checkGroupMembers checks a members request: the group, the op, and 1 to
// max member ids in all, each listed once, one of them at least valid
// (the others are answered rejected, invalid_id, one by one).
func checkGroupMembers(group string, req *api.GroupMembersRequest, max int) *api.APIError {
	switch {
	case !token.ValidID(group):
		return api.BadRequest("invalid_field", "group must be 1-128 letters, digits or ._:-")
	case req.Op == nil:
		return api.BadRequest("missing_field", `op is required: "add" or "remove"`)
	case *req.Op != api.OpAdd && *req.Op != api.OpRemove:
		return api.BadRequest("invalid_field", `op %q: "add" or "remove"`, *req.Op)
	case len(req.Devices)+len(req.Users) == 0:
		return api.BadRequest("missing_field", "give devices, users or both")
	case len(req.Devices)+len(req.Users) > max:
		return api.BadRequest("too_many_targets", "%d members, at most %d per request", len(req.Devices)+len(req.Users), max)
	}
	valid := 0
	for field, ids := range map[string][]string{"devices": req.Devices, "users": req.Users} {
		seen := make(map[string]struct{}, len(ids))
		for _, id := range ids {
			if _, dup := seen[id]; dup {
				return api.BadRequest("invalid_field", "%s lists %q more than once", field, id)
			}
			seen[id] = struct{}{}
			if token.ValidID(id) {
				valid++
			}
		}
	}
	if valid == 0 {
		return api.BadRequest("invalid_field", "no id in devices or users is valid: ids are 1-128 letters, digits or ._:-")
	}
	return nil
}

func (h *handler) serveGroupStream(w http.ResponseWriter, r *http.Request) {
	group := r.PathValue("group")
	var req api.GroupStreamRequest
	app, aerr := h.postApp(r, &req, func() *string { return req.App })
	if aerr != nil {
		api.WriteError(w, aerr)
		return
	}
	var age time.Duration
	switch {
	case !token.ValidID(group):
		aerr = api.BadRequest("invalid_field", "group must be 1-128 letters, digits or ._:-")
	case req.MaxLen == nil:
		aerr = api.BadRequest("missing_field", "max_len is required: 1 to 1000 messages, or 0 to turn the stream off")
	case *req.MaxLen != 0 && req.MaxAge == nil:
		aerr = api.BadRequest("missing_field", `max_age is required with max_len: a duration, "30s" to "24h"`)
	case *req.MaxLen == 0 && req.MaxAge != nil:
		aerr = api.BadRequest("invalid_field", "max_age goes with a max_len above 0")
	case req.MaxAge != nil:
		var err error
		if age, err = time.ParseDuration(*req.MaxAge); err != nil {
			aerr = api.BadRequest("invalid_field", "max_age %q is not a duration (30s, 5m, 1h)", *req.MaxAge)
		}
	}
	if aerr != nil {
		api.WriteError(w, aerr)
		return
	}
	out, err := h.core.SetGroupStream(r.Context(), app.ID(), group, *req.MaxLen, age)
	if err != nil {
		api.WriteError(w, storeError(err))
		return
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// getApp checks a GET request up to its API key: the node ready, the
// method, the key against the query's app.
func (h *handler) getApp(r *http.Request) (appliance.App, *api.APIError) {
	if !h.ready() {
		return appliance.App{}, notReady
	}
	if r.Method != http.MethodGet {
		return appliance.App{}, api.Errorf(http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
	}
	var appID *string
	if q := r.URL.Query(); q.Has("app") {
		appID = new(q.Get("app"))
	}
	return h.authenticate(r, appID)
}

// postApp checks a POST request up to its API key: the node ready, the
// method, the content type, the body's size and JSON (decoded strictly
// into v), then the key against the body's app (appOf, read after the
// decode).
func (h *handler) postApp(r *http.Request, v any, appOf func() *string) (appliance.App, *api.APIError) {
	if !h.ready() {
		return appliance.App{}, notReady
	}
	if r.Method != http.MethodPost {
		return appliance.App{}, api.Errorf(http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return appliance.App{}, api.Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json")
	}
	body, aerr := api.ReadBody(r, maxGroupBody)
	if aerr != nil {
		return appliance.App{}, aerr
	}
	if err := api.DecodeStrict(body, v); err != nil {
		return appliance.App{}, api.BadRequest("bad_json", "body is not a valid request: %v", err)
	}
	return h.authenticate(r, appOf())
}

// storeError answers a core failure of the group and user endpoints.
func storeError(err error) *api.APIError {
	switch {
	case errors.Is(err, appliance.ErrInvalidArgument):
		return api.BadRequest("invalid_field", "%v", err)
	case errors.Is(err, appliance.ErrNoStore):
		return api.Unavailable("this node keeps no groups or users: it has no store")
	}
	return api.Unavailable("the region's store is unreachable; retry")
}
