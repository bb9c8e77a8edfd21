// Package pushapi serves pushd's push API, through which business servers
// hand messages to a region (docs/push-api.md is its contract), over a
// node's core (appliance.Node). The handler decodes and checks a request,
// authenticates its API key, applies the app's limits and the region's
// degrade policy, and answers; the core stores, routes and delivers.
// Every refusal is a JSON error with a stable code and changes nothing.
//
//	node, _ := appliance.New(cfg, deps)
//	srv := &http.Server{Handler: pushapi.New(node, pushapi.Options{})}
//
// The handler is safe for concurrent use.
package pushapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/bridge"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/streams"
)

// Core is what the push API needs of a node; *appliance.Node is one.
type Core interface {
	Ready() <-chan struct{}
	AuthorizeAPIKey(ctx context.Context, app, key string) (appliance.App, error)
	Sheds(p wire.Priority, business string) (string, bool)
	PushLimits() appliance.PushLimits
	PushDevices(ctx context.Context, app string, msg streams.Message, devices []string) (*api.PushResponse, error)
	UserDevices(ctx context.Context, app string, users []string) ([][]string, error)
	PushUsers(ctx context.Context, app string, msg streams.Message, users []string, devices [][]string) (*api.PushResponse, error)
	PushGroup(ctx context.Context, app, group string, msg streams.Message, filter *appliance.Filter) *api.PushResponse
	TraceAccepted(id string, app appliance.App, devices int, group string)
	DeviceState(ctx context.Context, app, device string) (api.DeviceState, error)
	UserState(ctx context.Context, app, user string) (api.UserState, error)
	ChangeGroupMembers(ctx context.Context, app, group string, add bool, members []appliance.GroupMember) ([]api.GroupMemberResult, error)
	GroupState(ctx context.Context, app, group, cursor string, count int) (api.GroupState, error)
	SetGroupStream(ctx context.Context, app, group string, maxLen int64, maxAge time.Duration) (api.GroupStream, error)
	ServeHealth(w http.ResponseWriter, r *http.Request)
	Region() string
}

// Exporter is the bridge to other regions as the push API uses it;
// *bridge.Bridge is one.
type Exporter interface {
	// Peers are the other regions it reaches.
	Peers() []string
	// Export hands a push to the other regions it names and says, per
	// region, api.BridgedQueued or api.BridgedFailed, without waiting.
	Export(e bridge.Export) map[string]string
}

// Options configure the handler. Every zero value is usable.
type Options struct {
	// Logger receives the handler's logs. Zero: discarded.
	Logger *slog.Logger
	// Registry receives the handler's metrics. Zero: not registered.
	Registry prometheus.Registerer
	// Bridge takes the part of a push meant for other regions ("regions"
	// naming them). Zero: this region reaches no other; a push naming
	// another region is refused.
	Bridge Exporter
}

// maxBody bounds a push request's body.
const maxBody = 256 << 10

// handler serves the push API.
type handler struct {
	core    Core
	bridge  Exporter // nil: no other region
	log     *slog.Logger
	metrics metrics
}

type metrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
	degraded prometheus.Counter
}

// New returns the push API's handler over core.
func New(core Core, opts Options) http.Handler {
	h := &handler{core: core, bridge: opts.Bridge, log: opts.Logger}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.log = h.log.With("component", "pushapi")
	f := promauto.With(opts.Registry)
	h.metrics = metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_push_requests_total", Help: "Push API requests by outcome: ok or the error code.",
		}, []string{"outcome"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:                        "pushd_push_duration_seconds",
			Help:                        "Push API request handling time.",
			Buckets:                     []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
			NativeHistogramBucketFactor: 1.1,
		}),
		degraded: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_degrade_refused_total", Help: "Push requests refused because the region degrades their priority or business.",
		}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/push", h.servePush)
	mux.HandleFunc("/v1/devices/{device}", h.serveDevice)
	mux.HandleFunc("/v1/users/{user}", h.serveUser)
	mux.HandleFunc("/v1/groups/{group}/members", h.serveGroupMembers)
	mux.HandleFunc("/v1/groups/{group}/stream", h.serveGroupStream)
	mux.HandleFunc("/healthz", core.ServeHealth)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, api.Errorf(http.StatusNotFound, "not_found", "no such endpoint: %s", r.URL.Path))
	})
	return mux
}

func (h *handler) servePush(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	resp, err := h.push(r)
	h.metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		h.metrics.requests.WithLabelValues(err.Code).Inc()
		api.WriteError(w, err)
		return
	}
	h.metrics.requests.WithLabelValues("ok").Inc()
	api.WriteJSON(w, http.StatusOK, resp)
}

// notReady answers every request while the node is starting.
var notReady = api.Unavailable("node starting: its region metadata is not caught up yet; retry")

// ready reports whether the node takes pushes.
func (h *handler) ready() bool {
	select {
	case <-h.core.Ready():
		return true
	default:
		return false
	}
}

// push validates and executes one push request. The checks run in the
// order docs/push-api.md gives ("Order of checks"), and the first that
// fails answers: the node ready, method, content type, body size, JSON,
// authentication, fields, targets, degrade, rate limit; only then is
// anything stored.
func (h *handler) push(r *http.Request) (*api.PushResponse, *api.APIError) {
	if !h.ready() {
		return nil, notReady
	}
	if r.Method != http.MethodPost {
		return nil, api.Errorf(http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, api.Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json")
	}
	body, aerr := api.ReadBody(r, maxBody)
	if aerr != nil {
		return nil, aerr
	}
	var req api.PushRequest
	if err := api.DecodeStrict(body, &req); err != nil {
		return nil, api.BadRequest("bad_json", "body is not a valid push request: %v", err)
	}
	app, aerr := h.authenticate(r, req.App)
	if aerr != nil {
		return nil, aerr
	}
	limits := h.core.PushLimits()
	msg, aerr := message(app, limits, &req)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := checkTargets(&req, limits.MaxTargets); aerr != nil {
		return nil, aerr
	}
	local, remote, aerr := h.regions(req.Regions)
	if aerr != nil {
		return nil, aerr
	}
	filter, err := appliance.ParseFilter(req.Filter)
	if err != nil {
		return nil, api.BadRequest("invalid_field", "filter: %v", err)
	}
	if why, shed := h.core.Sheds(wire.Priority(msg.Priority), msg.Business); shed {
		h.metrics.degraded.Inc()
		e := api.Errorf(http.StatusServiceUnavailable, "degraded", "%s", why)
		e.RetryAfter = 30 * time.Second
		return nil, e
	}
	units := max(1, len(req.Devices), len(req.Users))
	var userDevices [][]string
	// A push to users counts their devices here; for other regions only,
	// where this region cannot see their devices, one unit per user.
	if len(req.Users) > 0 && local {
		if userDevices, aerr = h.resolveUsers(r.Context(), app.ID(), req.Users); aerr != nil {
			return nil, aerr
		}
		units = 0
		for _, ds := range userDevices {
			units += len(ds)
		}
		units = max(1, units)
	}
	if burst := app.RateBurst(); burst > 0 {
		if units > burst {
			// It could never pass: a Retry-After would be a promise broken.
			counted := "devices"
			if len(req.Users) > 0 && !local {
				counted = "users"
			}
			return nil, api.BadRequest("too_many_targets", "%d %s, but app %s's rate limit admits at most %d per request",
				units, counted, app.ID(), burst)
		}
		if ok, wait := app.TakeRate(units, time.Now()); !ok {
			e := api.Errorf(http.StatusTooManyRequests, "rate_limited", "app %s is over its push rate", app.ID())
			e.RetryAfter = wait
			return nil, e
		}
	}
	exp := bridge.Export{App: app.ID(), Msg: msg, Regions: remote}
	if filter != nil {
		exp.Filter = req.Filter
	}
	resp := &api.PushResponse{ID: msg.ID}
	switch {
	case len(req.Users) > 0:
		exp.Kind, exp.Targets = appliance.TargetUsers, req.Users
	case len(req.Devices) > 0:
		exp.Kind = appliance.TargetDevices
		for _, d := range req.Devices {
			if token.ValidID(d) {
				exp.Targets = append(exp.Targets, d)
			} else if !local {
				resp.Results = append(resp.Results, api.PushResult{Device: d, Status: api.StatusRejected, Reason: "invalid_device"})
			}
		}
	case req.Group != nil:
		exp.Kind, exp.Targets = appliance.TargetGroup, []string{*req.Group}
	default:
		exp.Kind = appliance.TargetBroadcast
	}
	if local {
		switch exp.Kind {
		case appliance.TargetUsers:
			devices := 0
			for _, ds := range userDevices {
				devices += len(ds)
			}
			h.core.TraceAccepted(msg.ID, app, devices, "")
			resp, err = h.core.PushUsers(r.Context(), app.ID(), msg, req.Users, userDevices)
		case appliance.TargetDevices:
			h.core.TraceAccepted(msg.ID, app, len(req.Devices), "")
			resp, err = h.core.PushDevices(r.Context(), app.ID(), msg, req.Devices)
		default:
			group := ""
			if req.Group != nil {
				group = *req.Group
			}
			h.core.TraceAccepted(msg.ID, app, 0, group)
			resp = h.core.PushGroup(r.Context(), app.ID(), group, msg, filter)
		}
		// Nothing is exported for a push refused here: a retry of it
		// must not reach the other regions twice under two ids.
		switch {
		case errors.Is(err, appliance.ErrUnavailable), errors.Is(err, appliance.ErrNoStore):
			return nil, api.Unavailable("the region's store is unreachable and no target is connected to this node")
		case err != nil:
			h.log.Error("push failed", "msg_id", msg.ID, "err", err)
			return nil, api.Errorf(http.StatusInternalServerError, "internal", "internal error")
		}
	}
	if len(remote) > 0 {
		resp.Bridged = h.bridge.Export(exp)
	}
	return resp, nil
}

// regions resolves a push's regions: whether it is for this region, and
// which other regions (all known to the bridge) it goes to.
func (h *handler) regions(r *api.Regions) (local bool, remote []string, aerr *api.APIError) {
	self := h.core.Region()
	var peers []string
	if h.bridge != nil {
		peers = h.bridge.Peers()
	}
	switch {
	case r == nil:
		return true, nil, nil
	case r.All:
		return true, peers, nil
	case len(r.List) == 0:
		return false, nil, api.BadRequest("invalid_field", `regions is empty: leave it out for this region only, or give "all"`)
	}
	for i, name := range r.List {
		switch {
		case !appliance.ValidRegion(name):
			return false, nil, api.BadRequest("invalid_field", "regions: %q is not a region name (1-128 letters, digits or ._:-)", name)
		case slices.Contains(r.List[:i], name):
			return false, nil, api.BadRequest("invalid_field", "regions lists %q more than once", name)
		case name == self:
			local = true
		case slices.Contains(peers, name):
			remote = append(remote, name)
		case h.bridge == nil:
			return false, nil, api.BadRequest("invalid_field", "regions: %q is not this region (%s), which has no bridge to other regions", name, self)
		default:
			return false, nil, api.BadRequest("invalid_field", "regions: unknown region %q; this region is %s and its bridge reaches %s",
				name, self, strings.Join(peers, ", "))
		}
	}
	return local, remote, nil
}

// resolveUsers asks the core for the users' devices, before the rate
// limit, which counts device messages: 503 while Redis cannot be read, 400
// when the users have more devices than one push may reach.
func (h *handler) resolveUsers(ctx context.Context, app string, users []string) ([][]string, *api.APIError) {
	devices, err := h.core.UserDevices(ctx, app, users)
	if err != nil {
		return nil, api.Unavailable("cannot read the users' devices from the region's store; retry")
	}
	total := 0
	for _, ds := range devices {
		total += len(ds)
	}
	if total > appliance.MaxUserDevices {
		return nil, api.BadRequest("too_many_targets", "the users have %d devices, a push reaches at most %d", total, appliance.MaxUserDevices)
	}
	return devices, nil
}

// checkTargets checks the request's targets: each one given must be
// usable, and exactly one must be given. Device ids that are not valid
// are answered one by one (rejected, invalid_device) as long as one valid
// id is left to push to; user ids must all be valid.
func checkTargets(req *api.PushRequest, maxTargets int) *api.APIError {
	targets := 0
	if req.Devices != nil {
		targets++
		if len(req.Devices) == 0 {
			return api.BadRequest("invalid_field", "devices is empty")
		}
		if len(req.Devices) > maxTargets {
			return api.BadRequest("too_many_targets", "%d devices, at most %d per request", len(req.Devices), maxTargets)
		}
		seen := make(map[string]struct{}, len(req.Devices))
		valid := 0
		for _, d := range req.Devices {
			if _, dup := seen[d]; dup {
				return api.BadRequest("invalid_field", "devices lists %q more than once", d)
			}
			seen[d] = struct{}{}
			if token.ValidID(d) {
				valid++
			}
		}
		if valid == 0 {
			return api.BadRequest("invalid_field", "no device id in devices is valid: ids are 1-128 letters, digits or ._:-")
		}
	}
	if req.Users != nil {
		targets++
		if aerr := checkIDList("users", req.Users, maxTargets); aerr != nil {
			return aerr
		}
	}
	if req.Group != nil {
		targets++
		if !token.ValidID(*req.Group) {
			return api.BadRequest("invalid_field", "group must be 1-128 letters, digits or ._:-")
		}
	}
	if req.Broadcast {
		targets++
	}
	if targets != 1 {
		return api.BadRequest("missing_field", "give exactly one of devices, users, group and broadcast")
	}
	if req.Filter != nil && req.Group == nil && !req.Broadcast {
		return api.BadRequest("invalid_field", "filter goes with group or broadcast; a push to devices or users names its targets")
	}
	return nil
}

// checkIDList checks a list of ids that must all be valid: 1 to max of
// them, none twice.
func checkIDList(field string, ids []string, max int) *api.APIError {
	if len(ids) == 0 {
		return api.BadRequest("invalid_field", "%s is empty", field)
	}
	if len(ids) > max {
		return api.BadRequest("too_many_targets", "%d %s, at most %d per request", len(ids), field, max)
	}
	seen := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		if !token.ValidID(id) {
			return api.BadRequest("invalid_field", "%s: %q is not 1-128 letters, digits or ._:-", field, id)
		}
		if _, dup := seen[id]; dup {
			return api.BadRequest("invalid_field", "%s lists %q more than once", field, id)
		}
		seen[id] = struct{}{}
	}
	return nil
}

// unauthorized answers a missing, unknown or foreign API key.
var unauthorized = api.Errorf(http.StatusUnauthorized, "unauthorized", "missing or invalid API key for this app")

// authenticate checks the bearer API key against the named app: a
// missing key first (401), then the app (400 when absent or empty), then
// whether the key is one of that app's (401 when not, or no such app; 503
// when the region's metadata cannot be reached to be sure).
func (h *handler) authenticate(r *http.Request, appID *string) (appliance.App, *api.APIError) {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || key == "" {
		return appliance.App{}, unauthorized
	}
	switch {
	case appID == nil:
		return appliance.App{}, api.BadRequest("missing_field", "app is required")
	case *appID == "":
		return appliance.App{}, api.BadRequest("invalid_field", "app is empty")
	}
	app, err := h.core.AuthorizeAPIKey(r.Context(), *appID, key)
	switch {
	case errors.Is(err, appliance.ErrUnavailable):
		return app, api.Unavailable("cannot reach the region's metadata to check this API key; retry")
	case err != nil:
		return app, unauthorized
	}
	return app, nil
}

// optionalID checks an optional identifier field: absent is fine, given
// it must be 1-128 letters, digits or ._:- ("" included: it is refused,
// not read as absent).
func optionalID(name string, v *string) *api.APIError {
	switch {
	case v == nil:
		return nil
	case *v == "":
		return api.BadRequest("invalid_field", "%s is empty: leave it out instead", name)
	case !token.ValidID(*v):
		return api.BadRequest("invalid_field", "%s must be 1-128 letters, digits or ._:-", name)
	}
	return nil
}

// message builds the stored message from the request's fields, checked
// in the order of their columns in docs/push-api.md.
func message(app appliance.App, limits appliance.PushLimits, req *api.PushRequest) (streams.Message, *api.APIError) {
	var m streams.Message
	if err := optionalID("business", req.Business); err != nil {
		return m, err
	}
	if req.Business != nil {
		if !app.BusinessAllowed(*req.Business) {
			return m, api.BadRequest("invalid_field", "business %s is not enabled for app %s", *req.Business, app.ID())
		}
		m.Business = *req.Business
	}
	prio := wire.PriorityNormal
	if req.Priority != nil {
		if *req.Priority == "" {
			return m, api.BadRequest("invalid_field", `priority is empty: give "low", "normal" or "high", or leave it out for normal`)
		}
		var err error
		if prio, err = wire.ParsePriority(*req.Priority); err != nil {
			return m, api.BadRequest("invalid_field", "%v", err)
		}
	}
	m.MaxLen = limits.InboxMaxLen
	maxTTL := int64(limits.MaxTTL / time.Second)
	switch {
	case req.TTL == nil:
		m.TTL = limits.MaxTTL
	case *req.TTL <= 0:
		return m, api.BadRequest("invalid_field", "ttl must be a positive number of seconds")
	case *req.TTL > maxTTL:
		return m, api.BadRequest("invalid_field", "ttl %d s is over the maximum of %d s", *req.TTL, maxTTL)
	default:
		m.TTL = time.Duration(*req.TTL) * time.Second
	}
	switch {
	case req.Data != nil && req.DataBase64 != nil:
		return m, api.BadRequest("invalid_field", "give data or data_base64, not both")
	case req.Data != nil:
		m.Payload = []byte(*req.Data)
	case req.DataBase64 != nil:
		var err error
		if m.Payload, err = base64.StdEncoding.DecodeString(*req.DataBase64); err != nil {
			return m, api.BadRequest("invalid_field", "data_base64 is not base64: %v", err)
		}
	default:
		return m, api.BadRequest("missing_field", "data or data_base64 is required")
	}
	if len(m.Payload) > app.MaxPayload() {
		return m, api.Errorf(http.StatusRequestEntityTooLarge, "payload_too_large",
			"payload is %d bytes, app %s allows %d", len(m.Payload), app.ID(), app.MaxPayload())
	}
	if err := optionalID("idempotency_key", req.IdempotencyKey); err != nil {
		return m, err
	}
	if req.IdempotencyKey != nil {
		m.ID = idempotentMessageID(app.ID(), *req.IdempotencyKey)
	} else {
		m.ID = newMessageID()
	}
	m.Priority, m.Created = streams.Priority(prio), time.Now()
	return m, nil
}

// newMessageID returns a 32-hex-digit id: 48 bits of unix milliseconds, so
// ids sort by time, then 80 random bits.
func newMessageID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli())<<16)
	_, _ = rand.Read(b[6:])
	return hex.EncodeToString(b[:])
}

// idempotentMessageID derives the message id from the caller's key, so a
// retried request carries the same id and each inbox's dedupe stores it
// once.
func idempotentMessageID(app, key string) string {
	sum := sha256.Sum256([]byte(app + "\x00" + key))
	return "k" + hex.EncodeToString(sum[:])[:31]
}

// serveDevice answers GET /v1/devices/{device}?app=A with the device's
// route and inbox state.
func (h *handler) serveDevice(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		api.WriteError(w, api.Errorf(http.StatusMethodNotAllowed, "method_not_allowed", "use GET"))
		return
	}
	var appID *string
	if q := r.URL.Query(); q.Has("app") {
		appID = new(q.Get("app"))
	}
	app, aerr := h.authenticate(r, appID)
	if aerr != nil {
		api.WriteError(w, aerr)
		return
	}
	device := r.PathValue("device")
	if !token.ValidID(device) {
		api.WriteError(w, api.BadRequest("invalid_field", "device id must be 1-128 letters, digits or ._:-"))
		return
	}
	out, err := h.core.DeviceState(r.Context(), app.ID(), device)
	if err != nil {
		api.WriteError(w, api.Unavailable("the region's store is unreachable"))
		return
	}
	api.WriteJSON(w, http.StatusOK, out)
}
