package appliance

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/streams"
)

// The push API: business servers hand messages to the region through any
// node. The contract is docs/push-api.md; every refusal is a JSON error
// with a stable code and changes nothing.

const maxPushBody = 256 << 10

// pushRequest is the body of POST /v1/push. A pointer field is nil when
// the field is absent or null; an optional string given as "" is refused,
// never read as its default (see push).
type pushRequest struct {
	App            *string  `json:"app"`
	Devices        []string `json:"devices"`
	Group          *string  `json:"group"`
	Broadcast      bool     `json:"broadcast"`
	Business       *string  `json:"business"`
	Priority       *string  `json:"priority"`
	TTL            *int64   `json:"ttl"`
	Data           *string  `json:"data"`
	DataBase64     *string  `json:"data_base64"`
	IdempotencyKey *string  `json:"idempotency_key"`
}

type pushResult struct {
	Device    string `json:"device"`
	Status    string `json:"status"`
	Seq       uint64 `json:"seq,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

type pushResponse struct {
	ID      string       `json:"id"`
	Stored  bool         `json:"stored"`
	Results []pushResult `json:"results,omitempty"`
	// Group and broadcast answers: sessions on this node handed the
	// message, and other nodes it was relayed to.
	Recipients   *int `json:"recipients,omitempty"`
	RelayedNodes *int `json:"relayed_nodes,omitempty"`
}

// Per-device statuses.
const (
	statusDelivered = "delivered"
	statusStored    = "stored"
	statusRejected  = "rejected"
)

// apiError is an error answer: HTTP status and stable code.
type apiError struct {
	status     int
	code       string
	msg        string
	retryAfter time.Duration
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func badRequest(code, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: code, msg: fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.retryAfter+time.Second-1)/time.Second)))
	}
	writeJSON(w, e.status, map[string]any{"error": map[string]string{"code": e.code, "message": e.msg}})
}

// notReady answers every push API request while the node is starting.
var notReady = &apiError{status: http.StatusServiceUnavailable, code: "unavailable",
	msg: "node starting: its region metadata is not caught up yet; retry", retryAfter: time.Second}

// pushMux serves the push API listener.
func (n *Node) pushMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/push", n.servePush)
	mux.HandleFunc("/v1/devices/{device}", n.serveDevice)
	mux.HandleFunc("/healthz", n.serveHealth)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{status: http.StatusNotFound, code: "not_found", msg: "no such endpoint: " + r.URL.Path})
	})
	return mux
}

func (n *Node) servePush(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	resp, err := n.push(r)
	n.metrics.pushDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		var ae *apiError
		if !errors.As(err, &ae) {
			n.log.Error("push failed", "err", err)
			ae = &apiError{status: http.StatusInternalServerError, code: "internal", msg: "internal error"}
		}
		n.metrics.pushRequests.WithLabelValues(ae.code).Inc()
		writeError(w, ae)
		return
	}
	n.metrics.pushRequests.WithLabelValues("ok").Inc()
	writeJSON(w, http.StatusOK, resp)
}

// push validates and executes one push request. The checks run in the
// order docs/push-api.md gives ("Order of checks"), and the first that
// fails answers: the node ready, method, content type, body size, JSON,
// authentication, fields, targets, degrade, rate limit; only then is
// anything stored.
func (n *Node) push(r *http.Request) (*pushResponse, error) {
	if !n.ready.Load() {
		return nil, notReady
	}
	if r.Method != http.MethodPost {
		return nil, &apiError{status: http.StatusMethodNotAllowed, code: "method_not_allowed", msg: "use POST"}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type", msg: "Content-Type must be application/json"}
	}
	body, err := readBody(r, maxPushBody)
	if err != nil {
		return nil, err
	}
	var req pushRequest
	if err := decodeStrict(body, &req); err != nil {
		return nil, badRequest("bad_json", "body is not a valid push request: %v", err)
	}
	app, err := n.authenticate(r, req.App)
	if err != nil {
		return nil, err
	}
	msg, err := n.message(app, &req)
	if err != nil {
		return nil, err
	}
	if err := n.checkTargets(&req); err != nil {
		return nil, err
	}
	if d := n.degrade.Load(); d.sheds(wire.Priority(msg.Priority), msg.Business) {
		n.metrics.degradeRefused.Inc()
		return nil, &apiError{status: http.StatusServiceUnavailable, code: "degraded",
			msg: "the region sheds " + d.describe() + " right now: " + d.reason, retryAfter: 30 * time.Second}
	}
	units := max(1, len(req.Devices))
	if app.limiter != nil {
		if float64(units) > app.limiter.burst {
			// It could never pass: a Retry-After would be a promise broken.
			return nil, badRequest("too_many_targets", "%d devices, but app %s's rate limit admits at most %d per request",
				units, app.id, int(app.limiter.burst))
		}
		if ok, wait := app.limiter.take(units, time.Now()); !ok {
			return nil, &apiError{status: http.StatusTooManyRequests, code: "rate_limited",
				msg: fmt.Sprintf("app %s is over its push rate", app.id), retryAfter: wait}
		}
	}
	if len(req.Devices) == 0 {
		group, name := broadcastGroup(app.id), ""
		if req.Group != nil {
			name = *req.Group
			group = groupKey(app.id, name)
		}
		return n.pushGroup(r.Context(), msg, name, group), nil
	}
	return n.pushDevices(r.Context(), app.id, msg, req.Devices)
}

// readBody reads the whole request body, refusing one over limit bytes
// with 413 before anything looks at its content.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: "payload_too_large", msg: fmt.Sprintf("body over %d bytes", limit)}
	case err != nil:
		return nil, badRequest("bad_json", "read body: %v", err)
	}
	return body, nil
}

// checkTargets checks the request's targets: each one given must be
// usable, and exactly one must be given. Device ids that are not valid
// are answered one by one (rejected, invalid_device) as long as one valid
// id is left to push to.
func (n *Node) checkTargets(req *pushRequest) error {
	targets := 0
	if req.Devices != nil {
		targets++
		if len(req.Devices) == 0 {
			return badRequest("invalid_field", "devices is empty")
		}
		if len(req.Devices) > n.cfg.MaxTargets {
			return badRequest("too_many_targets", "%d devices, at most %d per request", len(req.Devices), n.cfg.MaxTargets)
		}
		seen := make(map[string]struct{}, len(req.Devices))
		valid := 0
		for _, d := range req.Devices {
			if _, dup := seen[d]; dup {
				return badRequest("invalid_field", "devices lists %q more than once", d)
			}
			seen[d] = struct{}{}
			if token.ValidID(d) {
				valid++
			}
		}
		if valid == 0 {
			return badRequest("invalid_field", "no device id in devices is valid: ids are 1-128 letters, digits or ._:-")
		}
	}
	if req.Group != nil {
		targets++
		if !token.ValidID(*req.Group) {
			return badRequest("invalid_field", "group must be 1-128 letters, digits or ._:-")
		}
	}
	if req.Broadcast {
		targets++
	}
	if targets != 1 {
		return badRequest("missing_field", "give exactly one of devices, group and broadcast")
	}
	return nil
}

// authenticate checks the bearer API key against the named app: a
// missing key first (401), then the app (400 when absent or empty), then
// whether the key is one of that app's (401 when not, or no such app).
func (n *Node) authenticate(r *http.Request, appID *string) (*appEntry, error) {
	unauthorized := &apiError{status: http.StatusUnauthorized, code: "unauthorized", msg: "missing or invalid API key for this app"}
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || key == "" {
		return nil, unauthorized
	}
	switch {
	case appID == nil:
		return nil, badRequest("missing_field", "app is required")
	case *appID == "":
		return nil, badRequest("invalid_field", "app is empty")
	}
	app := n.apps.Load().apps[*appID]
	if app != nil && app.verifyAPIKey(key) {
		return app, nil
	}
	if n.meta == nil {
		return nil, unauthorized
	}
	// The app or key may have been created a moment ago on another node
	// and not be applied here yet: refuse only once this node holds
	// everything the region had committed when the request came.
	ctx, cancel := context.WithTimeout(r.Context(), recheckTimeout)
	defer cancel()
	if err := n.meta.Sync(ctx); err != nil {
		return nil, &apiError{status: http.StatusServiceUnavailable, code: "unavailable",
			msg: "cannot reach the region's metadata to check this API key; retry", retryAfter: time.Second}
	}
	app = n.currentApps().apps[*appID]
	if app == nil || !app.verifyAPIKey(key) {
		return nil, unauthorized
	}
	return app, nil
}

// optionalID checks an optional identifier field: absent is fine, given
// it must be 1-128 letters, digits or ._:- ("" included: it is refused,
// not read as absent).
func optionalID(name string, v *string) error {
	switch {
	case v == nil:
		return nil
	case *v == "":
		return badRequest("invalid_field", "%s is empty: leave it out instead", name)
	case !token.ValidID(*v):
		return badRequest("invalid_field", "%s must be 1-128 letters, digits or ._:-", name)
	}
	return nil
}

// message builds the stored message from the request's fields, checked
// in the order of their columns in docs/push-api.md.
func (n *Node) message(app *appEntry, req *pushRequest) (streams.Message, error) {
	var m streams.Message
	if err := optionalID("business", req.Business); err != nil {
		return m, err
	}
	if req.Business != nil {
		if _, ok := n.apps.Load().businessAllowed(app.id, []string{*req.Business}); !ok {
			return m, badRequest("invalid_field", "business %s is not enabled for app %s", *req.Business, app.id)
		}
		m.Business = *req.Business
	}
	prio := wire.PriorityNormal
	if req.Priority != nil {
		if *req.Priority == "" {
			return m, badRequest("invalid_field", `priority is empty: give "low", "normal" or "high", or leave it out for normal`)
		}
		var err error
		if prio, err = wire.ParsePriority(*req.Priority); err != nil {
			return m, badRequest("invalid_field", "%v", err)
		}
	}
	tun := n.tun.Load()
	m.MaxLen = tun.inboxMaxLen
	maxTTL := int64(tun.maxTTL / time.Second)
	switch {
	case req.TTL == nil:
		m.TTL = tun.maxTTL
	case *req.TTL <= 0:
		return m, badRequest("invalid_field", "ttl must be a positive number of seconds")
	case *req.TTL > maxTTL:
		return m, badRequest("invalid_field", "ttl %d s is over the maximum of %d s", *req.TTL, maxTTL)
	default:
		m.TTL = time.Duration(*req.TTL) * time.Second
	}
	switch {
	case req.Data != nil && req.DataBase64 != nil:
		return m, badRequest("invalid_field", "give data or data_base64, not both")
	case req.Data != nil:
		m.Payload = []byte(*req.Data)
	case req.DataBase64 != nil:
		var err error
		if m.Payload, err = base64.StdEncoding.DecodeString(*req.DataBase64); err != nil {
			return m, badRequest("invalid_field", "data_base64 is not base64: %v", err)
		}
	default:
		return m, badRequest("missing_field", "data or data_base64 is required")
	}
	if len(m.Payload) > app.maxPayload {
		return m, &apiError{status: http.StatusRequestEntityTooLarge, code: "payload_too_large",
			msg: fmt.Sprintf("payload is %d bytes, app %s allows %d", len(m.Payload), app.id, app.maxPayload)}
	}
	if err := optionalID("idempotency_key", req.IdempotencyKey); err != nil {
		return m, err
	}
	if req.IdempotencyKey != nil {
		m.ID = idempotentMessageID(app.id, *req.IdempotencyKey)
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

// pushDevices stores msg in each device's inbox and hands it to the nodes
// holding their sessions.
func (n *Node) pushDevices(ctx context.Context, app string, msg streams.Message, devices []string) (*pushResponse, error) {
	resp := &pushResponse{ID: msg.ID, Results: make([]pushResult, len(devices))}
	keys := make([]string, 0, len(devices))
	index := make([]int, 0, len(devices)) // keys[i] is devices[index[i]]
	for i, d := range devices {
		resp.Results[i] = pushResult{Device: d}
		if !token.ValidID(d) {
			resp.Results[i].Status, resp.Results[i].Reason = statusRejected, "invalid_device"
			continue
		}
		keys = append(keys, inboxKey(app, d))
		index = append(index, i)
	}
	if n.durable == nil {
		return n.pushUnstored(resp, msg, keys, index)
	}
	sctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	appended, err := n.durable.store.Append(sctx, msg, keys)
	n.redisResult(err)
	if err != nil {
		n.log.Warn("push not stored: delivering to local sessions only", "id", msg.ID, "err", err)
		return n.pushUnstored(resp, msg, keys, index)
	}
	resp.Stored = true
	rm := relayMessage{id: msg.ID, business: msg.Business, priority: wire.Priority(msg.Priority),
		created: uint64(msg.Created.UnixMilli()), payload: msg.Payload}
	var local []relayTarget
	var localAt []int
	remote := map[string][]relayTarget{}
	remoteAt := map[string][]int{}
	for k, a := range appended {
		res := &resp.Results[index[k]]
		res.Seq, res.Duplicate, res.Status = a.Seq, a.Duplicate, statusStored
		t := relayTarget{device: keys[k], connEpoch: a.Route.Epoch, inboxEpoch: a.Epoch, seq: a.Seq}
		switch a.Route.Node {
		case "":
		case n.cfg.NodeID:
			local, localAt = append(local, t), append(localAt, index[k])
		default:
			remote[a.Route.Node] = append(remote[a.Route.Node], t)
			remoteAt[a.Route.Node] = append(remoteAt[a.Route.Node], index[k])
		}
	}
	if len(remote) > 0 {
		blobs := make(map[string][][]byte, len(remote))
		for node, ts := range remote {
			blobs[node] = [][]byte{appendRelayPush(nil, &rm, ts)}
		}
		err := n.durable.store.Deliver(sctx, blobs)
		n.redisResult(err)
		if err != nil {
			// Stored but not relayed: the device's node reads the inbox
			// when the next message shows it a gap, or on reconnect.
			n.metrics.relayErrors.Inc()
		} else {
			for _, at := range remoteAt {
				for _, i := range at {
					resp.Results[i].Status = statusDelivered
				}
			}
		}
	}
	for k, took := range n.deliverTargets(&rm, local) {
		if took {
			resp.Results[localAt[k]].Status = statusDelivered
		}
	}
	n.countResults(resp.Results)
	return resp, nil
}

// pushUnstored delivers msg at most once to the targets connected to this
// node, when there is no Store or Redis failed: never a false stored.
func (n *Node) pushUnstored(resp *pushResponse, msg streams.Message, keys []string, index []int) (*pushResponse, error) {
	p := wire.Push{ID: msg.ID, Business: msg.Business, Priority: wire.Priority(msg.Priority),
		Created: uint64(msg.Created.UnixMilli()), Payload: msg.Payload}
	frame := wire.AppendPush(nil, &p)
	delivered := 0
	for k, key := range keys {
		res := &resp.Results[index[k]]
		if s := n.hub.lookup(key); s != nil && s.sendEphemeral(frame) {
			res.Status = statusDelivered
			delivered++
		} else {
			res.Status, res.Reason = statusRejected, "unavailable"
		}
	}
	n.countResults(resp.Results)
	if delivered == 0 && len(keys) > 0 {
		return nil, &apiError{status: http.StatusServiceUnavailable, code: "unavailable",
			msg: "the region's store is unreachable and no target is connected to this node", retryAfter: time.Second}
	}
	return resp, nil
}

func (n *Node) countResults(results []pushResult) {
	for _, r := range results {
		n.metrics.pushes.WithLabelValues(r.Status).Inc()
	}
}

// pushGroup hands msg to every connected member of a group (or of the
// app, for a broadcast) across the region: encoded once, fanned out here,
// relayed to every other live node. Group messages are not stored.
func (n *Node) pushGroup(ctx context.Context, msg streams.Message, group, key string) *pushResponse {
	p := wire.Push{ID: msg.ID, Business: msg.Business, Priority: wire.Priority(msg.Priority),
		Created: uint64(msg.Created.UnixMilli()), Group: group, Payload: msg.Payload}
	frame := wire.AppendPush(nil, &p)
	recipients := n.fanoutLocal(frame, key)
	relayed := 0
	if n.durable != nil {
		sctx, cancel := context.WithTimeout(ctx, redisTimeout)
		defer cancel()
		// The live nodes as of the last heartbeat (a second ago at most):
		// one that joined since misses this message, which only ever
		// reaches the members connected at the moment.
		blobs := map[string][][]byte{}
		if live := n.liveNodes.Load(); live != nil {
			entry := appendRelayFanout(nil, key, frame)
			for _, node := range *live {
				if node.ID != n.cfg.NodeID {
					blobs[node.ID] = [][]byte{entry}
				}
			}
		}
		if len(blobs) > 0 {
			err := n.durable.store.Deliver(sctx, blobs)
			n.redisResult(err)
			if err == nil {
				relayed = len(blobs)
			}
		}
	}
	return &pushResponse{ID: msg.ID, Recipients: &recipients, RelayedNodes: &relayed}
}

// fanoutLocal hands one encoded frame to the local members of a group key.
func (n *Node) fanoutLocal(frame []byte, group string) int {
	start := time.Now()
	k := n.hub.fanout(frame, group)
	n.metrics.fanout.Observe(time.Since(start).Seconds())
	n.metrics.fanoutSends.Add(float64(k))
	return k
}

type deviceResponse struct {
	App      string       `json:"app"`
	Device   string       `json:"device"`
	Online   bool         `json:"online"`
	Route    *routeAnswer `json:"route,omitempty"`
	Epoch    string       `json:"epoch"`
	Last     uint64       `json:"last"`
	Acked    uint64       `json:"acked"`
	Lost     uint64       `json:"lost"`
	InboxLen int64        `json:"inbox_len"`
}

type routeAnswer struct {
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
}

// serveDevice answers GET /v1/devices/{device}?app=A with the device's
// route and inbox state.
func (n *Node) serveDevice(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, code: "method_not_allowed", msg: "use GET"})
		return
	}
	var appID *string
	if q := r.URL.Query(); q.Has("app") {
		appID = new(q.Get("app"))
	}
	app, err := n.authenticate(r, appID)
	if err != nil {
		writeError(w, err.(*apiError))
		return
	}
	device := r.PathValue("device")
	if !token.ValidID(device) {
		writeError(w, badRequest("invalid_field", "device id must be 1-128 letters, digits or ._:-"))
		return
	}
	out, err := n.deviceState(r.Context(), app.id, device)
	if err != nil {
		writeError(w, err.(*apiError))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// deviceState reads a device's route and inbox.
func (n *Node) deviceState(ctx context.Context, app, device string) (deviceResponse, error) {
	key := inboxKey(app, device)
	out := deviceResponse{App: app, Device: device, Online: n.hub.lookup(key) != nil}
	if n.durable == nil {
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	info, err := n.durable.store.Device(ctx, key)
	n.redisResult(err)
	if err != nil {
		return out, &apiError{status: http.StatusServiceUnavailable, code: "unavailable", msg: "the region's store is unreachable", retryAfter: time.Second}
	}
	out.Epoch, out.Last, out.Acked, out.Lost, out.InboxLen = info.Epoch, info.Last, info.Acked, info.Lost, info.InboxLen
	if info.Route.Node != "" {
		out.Online = true
		out.Route = &routeAnswer{Node: info.Route.Node, Epoch: info.Route.Epoch}
	}
	return out, nil
}
