// Package adminapi serves pushd's admin API (docs/admin-api.md is its
// contract): the region's status, members, apps and keys, degrade policy,
// tunables, admin tokens and audit, for pushctl and the other nodes. It
// runs over the region's Raft metadata (raftmeta) and a node's core
// (appliance.Node), and never needs the node's sessions or locks.
//
//	srv := &http.Server{Handler: adminapi.New(node, meta, adminapi.Options{})}
//
// Reads are answered locally from the replicated state. Writes become
// Raft commands carrying the caller's token id (the audit actor) and
// request id, and run where the leader is (serveWrite): here when this
// node leads, else forwarded to the leader by forward, the one forwarding
// idiom of the region. Through an election a write waits for the next
// leader, up to its deadline; the request id makes sending it again safe,
// and a bound on hops keeps a request from chasing a moving leader for
// ever. The handler is safe for concurrent use.
package adminapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/raftmeta"
)

const (
	// forwardedHeader lists the nodes that forwarded a request, comma
	// separated, oldest first: its length is the request's hop count.
	forwardedHeader = "X-Pushd-Forwarded-By"
	// timeLeftHeader carries, on a forwarded request, the milliseconds
	// left of the write's deadline (less forwardSlack): the next node
	// waits no longer than that.
	timeLeftHeader = "X-Pushd-Time-Left-Ms"

	// adminWriteTimeout bounds an admin write from the moment a node
	// takes it: waiting for a leader, forwarding, and the Raft commit.
	adminWriteTimeout = 10 * time.Second
	// adminReadTimeout bounds a read.
	adminReadTimeout = 10 * time.Second
	// maxForwardHops is how many times a write may be forwarded: once
	// normally, again by a node that was no longer the leader when it
	// arrived, and so on up to this many.
	maxForwardHops = 3
	// forwardSlack is kept back from the deadline a forwarded request
	// carries, so the next node's answer gets back before this one's
	// deadline passes.
	forwardSlack = 250 * time.Millisecond
	// writeRetryMin and writeRetryMax bound the pause between two
	// attempts of a write waiting for a leader; a leader change ends the
	// pause early.
	writeRetryMin = 20 * time.Millisecond
	writeRetryMax = 500 * time.Millisecond
	// maxForwardAnswer bounds a forwarded answer held in memory.
	maxForwardAnswer = 1 << 20
)

const maxAdminBody = 64 << 10

// Core is what the admin API needs of the node it runs on; *appliance.Node
// is one.
type Core interface {
	Config() appliance.Config
	Tunables() api.Tunables
	Sessions() int64
	RedisUp() bool
	Refusing() string
	Counters() api.NodeCounters
	Trace(id string) []api.TraceEvent
	RedisTopology(ctx context.Context) *api.RedisTopology
	DeviceState(ctx context.Context, app, device string) (api.DeviceState, error)
	ServeHealth(w http.ResponseWriter, r *http.Request)
}

// Meta is the region's Raft metadata as the admin API uses it;
// *raftmeta.Store is one.
type Meta interface {
	State() *raftmeta.State
	Changes() (<-chan struct{}, func())
	Apply(ctx context.Context, cmd raftmeta.Command) (raftmeta.Result, error)
	IsLeader() bool
	LeaderMember() (raftmeta.Member, bool)
	Join(ctx context.Context, m raftmeta.Member, by raftmeta.Caller) error
	Remove(ctx context.Context, id string, by raftmeta.Caller) error
	Leave(ctx context.Context, by raftmeta.Caller) error
	Stats() raftmeta.Stats
	Sync(ctx context.Context) error
}

// Options configure the handler. Every zero value is usable.
type Options struct {
	// Logger receives the handler's logs. Zero: discarded.
	Logger *slog.Logger
	// Client makes the calls to other nodes' admin APIs (forwarded writes,
	// status, certificates). Zero: a client with a 20 s timeout that, with
	// TLS, calls them over HTTPS as this node (its node certificate).
	Client *http.Client
	// TLS is the region's TLS on this node. Zero: the region runs without
	// TLS (pushd --dev, or --insecure-plaintext): other nodes are called
	// over plain HTTP, a forwarded request is taken from anyone, and the
	// certificate endpoints answer 409 tls_off.
	TLS *TLS
	// Bridge is the node's bridge to other regions, for status and
	// GET /v1/admin/bridge. Zero: the node runs none.
	Bridge BridgeStatus
}

// BridgeStatus is the node's bridge as the admin API reports it;
// *bridge.Bridge is one.
type BridgeStatus interface {
	Status() api.BridgeStatus
}

// server is the admin API of one node.
type server struct {
	core   Core
	meta   Meta
	bridge BridgeStatus // nil: no bridge
	cfg    appliance.Config
	id     string // this node's id
	log    *slog.Logger
	client *http.Client
	tls    *TLS
	scheme string // of other nodes' admin APIs: https with TLS, else http
}

// New returns the admin API's handler over core and meta.
func New(core Core, meta Meta, opts Options) http.Handler {
	srv := &server{core: core, meta: meta, bridge: opts.Bridge, cfg: core.Config(), log: opts.Logger, client: opts.Client, tls: opts.TLS, scheme: "http"}
	srv.id = srv.cfg.NodeID
	if srv.log == nil {
		srv.log = slog.New(slog.DiscardHandler)
	}
	srv.log = srv.log.With("component", "adminapi")
	if srv.client == nil {
		srv.client = &http.Client{Timeout: 20 * time.Second}
		if srv.tls != nil {
			srv.client.Transport = srv.tls.Node.Transport()
		}
	}
	if srv.tls != nil {
		srv.scheme = "https"
	}
	return srv.mux()
}

// recheckTimeout bounds the sync with the region a request with a token
// this node does not know waits for.
const recheckTimeout = 2 * time.Second

// adminCall is one authenticated admin request.
type adminCall struct {
	r         *http.Request
	body      []byte
	actor     string // the admin token's id
	requestID string
}

type adminHandler func(ctx context.Context, c *adminCall) (any, error)

// mux routes the admin API.
func (srv *server) mux() http.Handler {
	mux := http.NewServeMux()
	read := func(pattern string, h adminHandler) { mux.Handle(pattern, srv.admin(raftmeta.RoleViewer, false, h)) }
	write := func(pattern string, role raftmeta.Role, h adminHandler) {
		mux.Handle(pattern, srv.admin(role, true, h))
	}

	read("GET /v1/admin/status", srv.adminStatus)
	read("GET /v1/admin/local", srv.adminLocal)
	read("GET /v1/admin/trace/{id}", srv.adminTrace)
	read("GET /v1/admin/local/trace/{id}", srv.adminLocalTrace)
	read("GET /v1/admin/bridge", srv.adminBridge)
	write("POST /v1/admin/nodes/join", raftmeta.RoleAdmin, srv.adminJoin)
	write("POST /v1/admin/nodes/{id}/remove", raftmeta.RoleAdmin, noBody(srv.adminRemove))
	write("POST /v1/admin/nodes/{id}/drain", raftmeta.RoleOperator, srv.adminDrain)
	write("POST /v1/admin/nodes/{id}/weight", raftmeta.RoleOperator, srv.adminWeight)

	read("GET /v1/admin/apps", srv.adminApps)
	write("POST /v1/admin/apps", raftmeta.RoleAdmin, srv.adminCreateApp)
	write("POST /v1/admin/apps/{id}/rotate-secret", raftmeta.RoleAdmin, noBody(srv.adminRotateSecret))
	write("POST /v1/admin/apps/{id}/api-keys", raftmeta.RoleAdmin, noBody(srv.adminAddAPIKey))
	write("DELETE /v1/admin/apps/{id}/api-keys/{key}", raftmeta.RoleAdmin, noBody(srv.adminRevokeAPIKey))
	write("POST /v1/admin/apps/{id}/limits", raftmeta.RoleAdmin, srv.adminSetLimits)
	write("POST /v1/admin/apps/{id}/client-groups", raftmeta.RoleAdmin, srv.adminSetClientGroups)
	write("DELETE /v1/admin/apps/{id}", raftmeta.RoleAdmin, noBody(srv.adminDeleteApp))

	read("GET /v1/admin/degrade", srv.adminDegrade)
	write("POST /v1/admin/degrade", raftmeta.RoleOperator, srv.adminSetDegrade)
	write("POST /v1/admin/degrade/off", raftmeta.RoleOperator, srv.adminDegradeOff)

	read("GET /v1/admin/tunables", srv.adminTunables)
	write("POST /v1/admin/tunables", raftmeta.RoleAdmin, srv.adminSetTunables)

	mux.Handle("GET /v1/admin/tokens", srv.admin(raftmeta.RoleAdmin, false, srv.adminTokens))
	write("POST /v1/admin/tokens", raftmeta.RoleAdmin, srv.adminCreateToken)
	write("DELETE /v1/admin/tokens/{id}", raftmeta.RoleAdmin, noBody(srv.adminRevokeToken))

	read("GET /v1/admin/audit", srv.adminAudit)
	// Certificates are no Raft writes: nothing about them is replicated.
	mux.Handle("POST /v1/admin/tls/sign", srv.admin(raftmeta.RoleAdmin, false, srv.adminSign))
	mux.Handle("POST /v1/admin/nodes/{id}/rotate-certificate", srv.admin(raftmeta.RoleAdmin, false, srv.adminRotate))
	// Profiles of this node, for admins only: they expose memory contents.
	mux.Handle("/debug/pprof/", srv.adminOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", srv.adminOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/trace", srv.adminOnly(http.HandlerFunc(pprof.Trace)))
	read("GET /v1/admin/devices/{app}/{device}", srv.adminDevice)
	mux.HandleFunc("/healthz", srv.core.ServeHealth)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, &api.APIError{Status: http.StatusNotFound, Code: "not_found", Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return mux
}

// admin wraps a handler with authentication, the role check, body
// reading, and error mapping; writes go through serveWrite.
func (srv *server) admin(role raftmeta.Role, write bool, h adminHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if aerr := srv.requireNodeForForwarded(r); aerr != nil {
			api.WriteError(w, aerr)
			return
		}
		have, id, aerr := srv.adminToken(r)
		if aerr != nil {
			api.WriteError(w, aerr)
			return
		}
		if !have.Allows(role) {
			api.WriteError(w, &api.APIError{Status: http.StatusForbidden, Code: "forbidden", Message: fmt.Sprintf("this call needs the %s role; the token has %s", role, have)})
			return
		}
		body, aerr := api.ReadBody(r, maxAdminBody)
		if aerr != nil {
			api.WriteError(w, aerr)
			return
		}
		c := &adminCall{r: r, body: body, actor: id, requestID: r.Header.Get("X-Request-ID")}
		if write {
			if c.requestID == "" {
				c.requestID = raftmeta.NewRequestID()
			}
			ctx, cancel := context.WithTimeout(r.Context(), writeTimeout(r))
			defer cancel()
			srv.serveWrite(ctx, w, c, h)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), adminReadTimeout)
		defer cancel()
		out, err := h(ctx, c)
		if err != nil {
			api.WriteError(w, adminError(err))
			return
		}
		api.WriteJSON(w, http.StatusOK, out)
	})
}

// writeTimeout is how long a write taken by this node may take: the
// node's own bound, or less when the node that forwarded it said so.
func writeTimeout(r *http.Request) time.Duration {
	d := adminWriteTimeout
	if ms, err := strconv.ParseInt(r.Header.Get(timeLeftHeader), 10, 64); err == nil && ms >= 0 {
		d = min(d, time.Duration(ms)*time.Millisecond)
	}
	return d
}

// hops is how many times the call was forwarded before it reached this
// node.
func (c *adminCall) hops() int {
	chain := c.r.Header.Get(forwardedHeader)
	if chain == "" {
		return 0
	}
	return strings.Count(chain, ",") + 1
}

// serveWrite runs a write on the leader: here when this node leads,
// forwarded otherwise. While no leader is known or reachable (an
// election), and when leadership moves away from this node in the middle
// of the write, it waits for the next leader and tries again with the
// same request id, which the FSM applies at most once, until ctx's
// deadline. Only then does it answer 503: not_leader when no leader
// could be reached, unavailable when one took the write but could not
// commit it in time.
func (srv *server) serveWrite(ctx context.Context, w http.ResponseWriter, c *adminCall, h adminHandler) {
	changes, unsubscribe := srv.meta.Changes()
	defer unsubscribe()
	var last *api.APIError // the answer if the deadline passes
	pause := writeRetryMin
	for {
		if srv.meta.IsLeader() {
			out, err := h(ctx, c)
			if err == nil {
				api.WriteJSON(w, http.StatusOK, out)
				return
			}
			if !leadershipMoved(err) || ctx.Err() != nil {
				api.WriteError(w, adminError(err))
				return
			}
			last = adminError(err)
			srv.log.Info("admin write: leadership moved while it was applied; sending it to the next leader", "request_id", c.requestID, "err", err)
		} else if leader, ok := srv.meta.LeaderMember(); !ok || leader.ID == srv.id || leader.AdminAddr == "" {
			last = &api.APIError{Status: http.StatusServiceUnavailable, Code: "not_leader", Message: "no leader known right now; retry", RetryAfter: time.Second}
		} else if c.hops() >= maxForwardHops {
			api.WriteError(w, &api.APIError{Status: http.StatusServiceUnavailable, Code: "not_leader", RetryAfter: time.Second,
				Message: fmt.Sprintf("forwarded %d times and this node (%s) does not lead either: leadership keeps moving; retry", c.hops(), srv.id)})
			return
		} else {
			ans, err := srv.forward(ctx, c, leader)
			switch {
			case err != nil:
				last = &api.APIError{Status: http.StatusServiceUnavailable, Code: "not_leader", Message: "leader " + leader.ID + " unreachable: " + err.Error(), RetryAfter: time.Second}
			case ans.status == http.StatusServiceUnavailable && ans.code == "not_leader" && c.hops() == 0:
				// It lost leadership and found no leader to send it on
				// to within its hops: this node's view may be better by
				// now. Only the node the caller asked tries again, so a
				// chain of forwards does not multiply attempts.
				last = &api.APIError{Status: ans.status, Code: ans.code, Message: "forwarded to " + leader.ID + ": " + ans.msg, RetryAfter: time.Second}
			default:
				ans.write(w)
				return
			}
		}
		switch waitRetry(ctx, changes, pause) {
		case waitDeadline:
			last.Message = fmt.Sprintf("no leader took the write within %s: %s", writeTimeout(c.r), last.Message)
			api.WriteError(w, last)
			return
		case waitClosed:
			api.WriteError(w, &api.APIError{Status: http.StatusServiceUnavailable, Code: "unavailable", RetryAfter: time.Second,
				Message: "this node's region metadata is closed (shutting down): " + last.Message})
			return
		}
		pause = min(2*pause, writeRetryMax)
	}
}

// leadershipMoved reports whether a write failed because this node
// stopped leading while it ran: tried again on the next leader with the
// same request id, it is applied once.
func leadershipMoved(err error) bool {
	return errors.Is(err, raftmeta.ErrNotLeader) || errors.Is(err, raftmeta.ErrLeadershipLost)
}

// waitRetry pauses before the next attempt of a write: for pause, or
// until the metadata changes (a leader change among them), whichever
// comes first. It says why it stopped waiting: time to try again, the
// write's deadline, or the metadata store closing.
func waitRetry(ctx context.Context, changes <-chan struct{}, pause time.Duration) waitResult {
	t := time.NewTimer(pause)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return waitDeadline
	case _, ok := <-changes:
		if !ok {
			return waitClosed
		}
	case <-t.C:
	}
	if ctx.Err() != nil {
		return waitDeadline
	}
	return waitAgain
}

type waitResult int

const (
	waitAgain waitResult = iota
	waitDeadline
	waitClosed
)

// forwarded is the leader's answer to a forwarded write.
type forwarded struct {
	status    int
	header    http.Header
	body      []byte
	code, msg string // of an error answer
}

func (a *forwarded) write(w http.ResponseWriter) {
	for _, h := range []string{"Content-Type", "Retry-After"} {
		if v := a.header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}

// forward sends the call to the leader's admin API with its request id,
// this node added to its forwarded-by chain and what is left of its
// deadline, and returns the answer. It gives up on the leader, with an
// error, if the region's leader changes while it waits: the write is
// then sent to the next one, and its request id makes that safe whether
// or not the first got it.
func (srv *server) forward(ctx context.Context, c *adminCall, leader raftmeta.Member) (*forwarded, error) {
	dl, _ := ctx.Deadline()
	left := time.Until(dl) - forwardSlack
	if left <= 0 {
		return nil, context.DeadlineExceeded
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Watch for the leader changing under the request.
	changes, unsubscribe := srv.meta.Changes()
	defer unsubscribe()
	watched := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-done:
				return
			case _, ok := <-changes:
				if !ok {
					return
				}
				if now, ok := srv.meta.LeaderMember(); !ok || now.ID != leader.ID {
					cancel(fmt.Errorf("leadership moved from %s while the request was on its way", leader.ID))
					return
				}
			}
		}
	}()
	defer func() { close(done); <-watched }()

	req, err := http.NewRequestWithContext(ctx, c.r.Method, srv.scheme+"://"+leader.AdminAddr+c.r.URL.RequestURI(), bytes.NewReader(c.body))
	if err != nil {
		return nil, err
	}
	chain := srv.id
	if prev := c.r.Header.Get(forwardedHeader); prev != "" {
		chain = prev + "," + chain
	}
	req.Header.Set("Authorization", c.r.Header.Get("Authorization"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", c.requestID)
	req.Header.Set(forwardedHeader, chain)
	req.Header.Set(timeLeftHeader, strconv.FormatInt(left.Milliseconds(), 10))
	resp, err := srv.client.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return nil, cause
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardAnswer))
	if err != nil {
		return nil, fmt.Errorf("read %s's answer: %w", leader.ID, err)
	}
	a := &forwarded{status: resp.StatusCode, header: resp.Header, body: body}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil {
			a.code, a.msg = e.Error.Code, e.Error.Message
		}
	}
	return a, nil
}

// adminOnly guards a plain handler with the admin role.
func (srv *server) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		role, _, aerr := srv.adminToken(r)
		switch {
		case aerr != nil:
			api.WriteError(w, aerr)
		case !role.Allows(raftmeta.RoleAdmin):
			api.WriteError(w, &api.APIError{Status: http.StatusForbidden, Code: "forbidden", Message: "profiles need the admin role; the token has " + string(role)})
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// adminToken returns the role and id of the request's admin token. A
// token this node does not know may have been created a moment ago on
// another node, or this node may still be catching up after a start: it
// is refused only once the node holds everything the region had
// committed when the request came, and answered with a retryable 503
// when that cannot be established.
func (srv *server) adminToken(r *http.Request) (raftmeta.Role, string, *api.APIError) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	unauthorized := &api.APIError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "missing or unknown admin token"}
	if tok == "" {
		return "", "", unauthorized
	}
	if role, id, ok := srv.meta.State().AdminRole(tok); ok {
		return role, id, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), recheckTimeout)
	defer cancel()
	if err := srv.meta.Sync(ctx); err != nil {
		return "", "", &api.APIError{Status: http.StatusServiceUnavailable, Code: "unavailable",
			Message: "cannot reach the region's metadata to check this admin token; retry", RetryAfter: time.Second}
	}
	if role, id, ok := srv.meta.State().AdminRole(tok); ok {
		return role, id, nil
	}
	return "", "", unauthorized
}

// adminError maps an error to its HTTP answer.
func adminError(err error) *api.APIError {
	var ae *api.APIError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, raftmeta.ErrNotFound):
		return &api.APIError{Status: http.StatusNotFound, Code: "not_found", Message: err.Error()}
	case errors.Is(err, raftmeta.ErrConflict):
		return &api.APIError{Status: http.StatusConflict, Code: "conflict", Message: err.Error()}
	case errors.Is(err, raftmeta.ErrInvalid):
		return &api.APIError{Status: http.StatusBadRequest, Code: "invalid", Message: err.Error()}
	case errors.Is(err, raftmeta.ErrNotLeader):
		return &api.APIError{Status: http.StatusServiceUnavailable, Code: "not_leader", Message: err.Error(), RetryAfter: time.Second}
	case errors.Is(err, raftmeta.ErrLeadershipLost), errors.Is(err, raftmeta.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, raftmeta.ErrClosed), errors.Is(err, appliance.ErrUnavailable):
		return &api.APIError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: err.Error(), RetryAfter: time.Second}
	}
	return &api.APIError{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
}

// decode parses the call's JSON body strictly into v (decodeStrict: no
// key twice, no unknown or miscased field, one value). An empty body is
// an empty object.
func (c *adminCall) decode(v any) error {
	body := c.body
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if err := api.DecodeStrict(body, v); err != nil {
		return api.BadRequest("bad_json", "body: %v", err)
	}
	return nil
}

// noBody wraps a write that takes no body: it may send none or an empty
// object, and any field in it is refused like an unknown field.
func noBody(h adminHandler) adminHandler {
	return func(ctx context.Context, c *adminCall) (any, error) {
		if err := c.decode(&struct{}{}); err != nil {
			return nil, err
		}
		return h(ctx, c)
	}
}

// apply proposes cmd as the caller.
func (srv *server) apply(ctx context.Context, c *adminCall, cmd raftmeta.Command) (raftmeta.Result, error) {
	cmd.RequestID, cmd.Actor = c.requestID, c.actor
	return srv.meta.Apply(ctx, cmd)
}

func (srv *server) applyAnswer(ctx context.Context, c *adminCall, cmd raftmeta.Command) (any, error) {
	res, err := srv.apply(ctx, c, cmd)
	if err != nil {
		return nil, err
	}
	return api.Applied{Index: res.Index, Replayed: res.Replayed}, nil
}

// shownOnce refuses to answer a replayed write whose answer held a
// freshly generated credential: the retry generated another that was
// never stored. remedy says how to get a new one.
func shownOnce(what, remedy string) *api.APIError {
	return &api.APIError{Status: http.StatusConflict, Code: "conflict",
		Message: "this request id was already applied; the " + what + " it created was shown then and is not shown again (" + remedy + ")"}
}

// --- nodes and status ---

// member is a member record as the API shows it.
func member(m raftmeta.Member) api.Member {
	return api.Member{ID: m.ID, RaftAddr: m.RaftAddr, AdminAddr: m.AdminAddr, DeviceAddr: m.DeviceAddr,
		TCPAddr: m.TCPAddr, PushAddr: m.PushAddr, Weight: m.Weight, Draining: m.Draining, Voter: m.Voter, Joined: m.Joined}
}

// redisState says whether this node reaches Redis, as status shows it.
func (srv *server) redisState() string {
	if srv.core.RedisUp() {
		return "up"
	}
	return "down"
}

func (srv *server) local() api.LocalStatus {
	s := srv.meta.Stats()
	ls := api.LocalStatus{ID: srv.id, Region: srv.cfg.Region, RaftState: s.State, Term: s.Term, LastIndex: s.LastLogIndex,
		AppliedIndex: s.AppliedIndex, CommitIndex: s.CommitIndex, Leader: s.LeaderID,
		Connections: srv.core.Sessions(), Redis: srv.redisState(), Refusing: srv.core.Refusing(), Counters: srv.core.Counters(),
		Certificate: srv.certificateInfo()}
	if srv.bridge != nil {
		b := srv.bridge.Status()
		ls.Bridge = &b
	}
	return ls
}

func (srv *server) adminLocal(context.Context, *adminCall) (any, error) { return srv.local(), nil }

// adminStatus asks every member for its local status in parallel and
// lists those that do not answer within a second as not alive.
func (srv *server) adminStatus(ctx context.Context, c *adminCall) (any, error) {
	st := srv.meta.State()
	nodes := make([]api.NodeStatus, 0, len(st.Members))
	for _, m := range st.Members {
		nodes = append(nodes, api.NodeStatus{Member: member(m)})
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func(ns *api.NodeStatus) {
			defer wg.Done()
			var ls api.LocalStatus
			if ns.ID == srv.id {
				ls = srv.local()
			} else if err := srv.askLocal(ctx, ns.AdminAddr, "/v1/admin/local", c.r.Header.Get("Authorization"), &ls); err != nil {
				return
			}
			ns.Alive, ns.RaftState, ns.LastIndex, ns.AppliedIndex = true, ls.RaftState, ls.LastIndex, ls.AppliedIndex
			ns.Connections, ns.Redis, ns.Refusing, ns.Counters, ns.Certificate, ns.Region = ls.Connections, ls.Redis, ls.Refusing, &ls.Counters, ls.Certificate, ls.Region
		}(&nodes[i])
	}
	// The answering node's view of Redis, read while the members answer.
	var top *api.RedisTopology
	wg.Add(1)
	go func() {
		defer wg.Done()
		top = srv.core.RedisTopology(ctx)
	}()
	wg.Wait()
	leader, _ := srv.meta.LeaderMember()
	return api.RegionStatus{Region: srv.cfg.Region, Leader: leader.ID, Nodes: nodes, Degrade: degradeState(st.Degrade), Redis: srv.redisState(),
		RedisTopology: top}, nil
}

// adminBridge asks every member for its bridge, as adminStatus does for
// its state.
func (srv *server) adminBridge(ctx context.Context, c *adminCall) (any, error) {
	st := srv.meta.State()
	nodes := make([]api.BridgeNode, 0, len(st.Members))
	addrs := make([]string, 0, len(st.Members))
	for _, m := range st.Members {
		nodes = append(nodes, api.BridgeNode{ID: m.ID})
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	for _, n := range nodes {
		addrs = append(addrs, st.Members[n.ID].AdminAddr)
	}
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func(bn *api.BridgeNode, addr string) {
			defer wg.Done()
			var ls api.LocalStatus
			if bn.ID == srv.id {
				ls = srv.local()
			} else if err := srv.askLocal(ctx, addr, "/v1/admin/local", c.r.Header.Get("Authorization"), &ls); err != nil {
				return
			}
			bn.Alive, bn.Bridge = true, ls.Bridge
		}(&nodes[i], addrs[i])
	}
	wg.Wait()
	return api.BridgeRegion{Region: srv.cfg.Region, Nodes: nodes}, nil
}

// askLocal reads one of a member's /v1/admin/local endpoints into out,
// giving it a second.
func (srv *server) askLocal(ctx context.Context, addr, path, auth string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.scheme+"://"+addr+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", auth)
	resp, err := srv.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", addr, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// adminLocalTrace answers this node's events of a message.
func (srv *server) adminLocalTrace(_ context.Context, c *adminCall) (any, error) {
	id := c.r.PathValue("id")
	if !token.ValidID(id) {
		return nil, api.BadRequest("invalid", "a message id is 1-128 letters, digits or ._:-")
	}
	return api.LocalTrace{Node: srv.id, Events: srv.core.Trace(id)}, nil
}

// adminTrace asks every member for its events of a message in parallel
// (a second each, as status does) and merges them in time order. A
// member that does not answer is listed with its error: its part of the
// journey is missing.
func (srv *server) adminTrace(ctx context.Context, c *adminCall) (any, error) {
	id := c.r.PathValue("id")
	if !token.ValidID(id) {
		return nil, api.BadRequest("invalid", "a message id is 1-128 letters, digits or ._:-")
	}
	st := srv.meta.State()
	nodes := make([]api.TraceNode, 0, len(st.Members))
	for _, m := range st.Members {
		nodes = append(nodes, api.TraceNode{ID: m.ID})
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	found := make([][]api.TraceEvent, len(nodes))
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			tn := &nodes[i]
			if tn.ID == srv.id {
				found[i] = srv.core.Trace(id)
			} else {
				var lt api.LocalTrace
				err := srv.askLocal(ctx, st.Members[tn.ID].AdminAddr, "/v1/admin/local/trace/"+url.PathEscape(id), c.r.Header.Get("Authorization"), &lt)
				if err != nil {
					tn.Error = err.Error()
					return
				}
				found[i] = lt.Events
			}
			tn.OK, tn.Events = true, len(found[i])
		}(i)
	}
	wg.Wait()
	out := api.Trace{ID: id, Events: []api.TraceEvent{}, Nodes: nodes}
	for _, evs := range found {
		out.Events = append(out.Events, evs...)
	}
	sort.SliceStable(out.Events, func(i, j int) bool { return out.Events[i].Time.Before(out.Events[j].Time) })
	return out, nil
}

func (srv *server) adminJoin(ctx context.Context, c *adminCall) (any, error) {
	var j api.JoinRequest
	if err := c.decode(&j); err != nil {
		return nil, err
	}
	if !token.ValidID(j.ID) || j.RaftAddr == "" || j.AdminAddr == "" {
		return nil, api.BadRequest("invalid", "id, raft_addr and admin_addr are required")
	}
	weight := 100
	if j.Weight != nil {
		weight = *j.Weight
	}
	m := raftmeta.Member{ID: j.ID, RaftAddr: j.RaftAddr, AdminAddr: j.AdminAddr, DeviceAddr: j.DeviceAddr,
		TCPAddr: j.TCPAddr, PushAddr: j.PushAddr, Weight: weight}
	if err := srv.meta.Join(ctx, m, c.caller()); err != nil {
		return nil, err
	}
	if joined, ok := srv.meta.State().Members[j.ID]; ok {
		m = joined
	}
	return member(m), nil
}

// adminRemove takes a member out of the region. Writes run on the leader,
// so removing the leader itself is a leave: it hands leadership on and
// stops taking part in Raft; stop its pushd afterwards. A retry with the
// request id of a remove that went through answers the same, on this
// leader or the next.
func (srv *server) adminRemove(ctx context.Context, c *adminCall) (any, error) {
	id := c.r.PathValue("id")
	var err error
	if id == srv.id {
		err = srv.meta.Leave(ctx, c.caller())
	} else {
		err = srv.meta.Remove(ctx, id, c.caller())
	}
	if err != nil {
		return nil, err
	}
	return api.NodeRemoved{Removed: id}, nil
}

// caller is the call as the asker of a membership change: the token id
// for the audit and the request id, as apply puts them on a command.
func (c *adminCall) caller() raftmeta.Caller {
	return raftmeta.Caller{RequestID: c.requestID, Actor: c.actor}
}

func (srv *server) adminDrain(ctx context.Context, c *adminCall) (any, error) {
	var b struct {
		Draining *bool `json:"draining"`
	}
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	if b.Draining == nil {
		return nil, api.BadRequest("invalid", "draining (true or false) is required")
	}
	return srv.applyAnswer(ctx, c, raftmeta.SetMemberDrain(c.r.PathValue("id"), *b.Draining))
}

func (srv *server) adminWeight(ctx context.Context, c *adminCall) (any, error) {
	var b struct {
		Weight *int `json:"weight"`
	}
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	if b.Weight == nil || *b.Weight < 0 || *b.Weight > 1000 {
		return nil, api.BadRequest("invalid", "weight must be 0..1000")
	}
	return srv.applyAnswer(ctx, c, raftmeta.SetMemberWeight(c.r.PathValue("id"), *b.Weight))
}

// --- apps ---

func (srv *server) adminApps(context.Context, *adminCall) (any, error) {
	st := srv.meta.State()
	apps := make([]api.App, 0, len(st.Apps))
	for _, a := range st.Apps {
		out := api.App{ID: a.ID, AppLimits: a.AppLimits, ClientGroups: !a.ClientGroupsOff, Created: a.Created}
		for _, s := range a.Secrets {
			out.KeyIDs = append(out.KeyIDs, s.KeyID)
		}
		for _, k := range a.APIKeys {
			out.APIKeys = append(out.APIKeys, k.ID)
		}
		apps = append(apps, out)
	}
	sort.Slice(apps, func(i, j int) bool { return apps[i].ID < apps[j].ID })
	return map[string]any{"apps": apps}, nil
}

func (srv *server) adminCreateApp(ctx context.Context, c *adminCall) (any, error) {
	var b struct {
		ID string `json:"id"`
		api.AppLimits
	}
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	secret := raftmeta.NewSecret("k1")
	key, apiKey := raftmeta.NewAPIKey("key-1")
	res, err := srv.apply(ctx, c, raftmeta.CreateApp(raftmeta.App{ID: b.ID, Secrets: []raftmeta.Secret{secret}, APIKeys: []raftmeta.APIKey{apiKey},
		AppLimits: b.AppLimits}))
	if err != nil {
		return nil, err
	}
	if res.Replayed {
		return nil, shownOnce("token secret and API key", "rotate the secret and add an API key to get new ones")
	}
	return api.AppCreated{ID: b.ID, KeyID: secret.KeyID, SecretBase64: base64.StdEncoding.EncodeToString(secret.Secret),
		APIKeyID: apiKey.ID, APIKey: key}, nil
}

// nextID returns prefix+N for the smallest N above every id of that form.
func nextID(prefix string, ids []string) string {
	highest := 0
	for _, id := range ids {
		if k, err := strconv.Atoi(strings.TrimPrefix(id, prefix)); err == nil && strings.HasPrefix(id, prefix) && k > highest {
			highest = k
		}
	}
	return prefix + strconv.Itoa(highest+1)
}

func (srv *server) appOf(c *adminCall) (raftmeta.App, error) {
	a, ok := srv.meta.State().App(c.r.PathValue("id"))
	if !ok {
		return a, fmt.Errorf("app %s: %w", c.r.PathValue("id"), raftmeta.ErrNotFound)
	}
	return a, nil
}

func (srv *server) adminRotateSecret(ctx context.Context, c *adminCall) (any, error) {
	a, err := srv.appOf(c)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range a.Secrets {
		ids = append(ids, s.KeyID)
	}
	secret := raftmeta.NewSecret(nextID("k", ids))
	res, err := srv.apply(ctx, c, raftmeta.RotateAppSecret(a.ID, secret))
	if err != nil {
		return nil, err
	}
	if res.Replayed {
		return nil, shownOnce("token secret", "rotate again to get a new one")
	}
	return api.SecretRotated{KeyID: secret.KeyID, SecretBase64: base64.StdEncoding.EncodeToString(secret.Secret)}, nil
}

func (srv *server) adminAddAPIKey(ctx context.Context, c *adminCall) (any, error) {
	a, err := srv.appOf(c)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, k := range a.APIKeys {
		ids = append(ids, k.ID)
	}
	key, apiKey := raftmeta.NewAPIKey(nextID("key-", ids))
	res, err := srv.apply(ctx, c, raftmeta.AddAPIKey(a.ID, apiKey))
	if err != nil {
		return nil, err
	}
	if res.Replayed {
		return nil, shownOnce("API key", "revoke it and add another")
	}
	return api.APIKeyAdded{APIKeyID: apiKey.ID, APIKey: key}, nil
}

func (srv *server) adminRevokeAPIKey(ctx context.Context, c *adminCall) (any, error) {
	return srv.applyAnswer(ctx, c, raftmeta.RevokeAPIKey(c.r.PathValue("id"), c.r.PathValue("key")))
}

func (srv *server) adminSetLimits(ctx context.Context, c *adminCall) (any, error) {
	var b api.AppLimits
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	return srv.applyAnswer(ctx, c, raftmeta.SetAppLimits(c.r.PathValue("id"), b))
}

func (srv *server) adminSetClientGroups(ctx context.Context, c *adminCall) (any, error) {
	var b api.ClientGroupsRequest
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	if b.Allow == nil {
		return nil, api.BadRequest("invalid", `allow is required: true lets the app's devices JOIN and LEAVE groups, false leaves groups to its business`)
	}
	return srv.applyAnswer(ctx, c, raftmeta.SetAppClientGroups(c.r.PathValue("id"), *b.Allow))
}

func (srv *server) adminDeleteApp(ctx context.Context, c *adminCall) (any, error) {
	return srv.applyAnswer(ctx, c, raftmeta.DeleteApp(c.r.PathValue("id")))
}

// --- degrade ---

// degradeState is the degrade policy as the API shows it.
func degradeState(d raftmeta.Degrade) api.DegradeState {
	out := api.DegradeState{Active: d.Active, Businesses: d.Businesses, Reason: d.Reason, By: d.By, Since: d.Since}
	if d.Active {
		out.Priority = wire.Priority(d.Priority).String()
	}
	return out
}

func (srv *server) adminDegrade(context.Context, *adminCall) (any, error) {
	return degradeState(srv.meta.State().Degrade), nil
}

func (srv *server) adminSetDegrade(ctx context.Context, c *adminCall) (any, error) {
	var b api.DegradeRequest
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	if b.Priority == "" {
		return nil, api.BadRequest("invalid", "priority (low, normal or high) is required")
	}
	p, err := wire.ParsePriority(b.Priority)
	if err != nil {
		return nil, api.BadRequest("invalid", "%v", err)
	}
	if b.Reason == "" {
		return nil, api.BadRequest("invalid", "reason is required: it is shown to operators and devices")
	}
	return srv.applyAnswer(ctx, c, raftmeta.SetDegrade(raftmeta.Degrade{Priority: raftmeta.Priority(p),
		Businesses: b.Businesses, Reason: b.Reason}))
}

func (srv *server) adminDegradeOff(ctx context.Context, c *adminCall) (any, error) {
	var b struct {
		Reason string `json:"reason"`
	}
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	return srv.applyAnswer(ctx, c, raftmeta.DegradeOff(b.Reason))
}

// --- tunables, tokens, audit, devices ---

func (srv *server) adminTunables(context.Context, *adminCall) (any, error) {
	return srv.core.Tunables(), nil
}

// adminSetTunables sets the tunables the body names; the region keeps the
// others (the FSM merges), so concurrent changes of different settings
// both stand.
func (srv *server) adminSetTunables(ctx context.Context, c *adminCall) (any, error) {
	var b api.Tunables
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	var t raftmeta.Tunables
	for _, d := range []struct {
		s   string
		dst *time.Duration
		key string
	}{{b.InboxTTL, &t.InboxTTL, "inbox_ttl"}, {b.AckTimeout, &t.AckTimeout, "ack_timeout"}, {b.AckBackoffMax, &t.AckBackoffMax, "ack_backoff_max"}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil || v <= 0 {
			return nil, api.BadRequest("invalid", "%s: want a positive duration like 10s", d.key)
		}
		*d.dst = v
	}
	switch {
	case b.InboxMaxLen < 0 || b.InboxMaxLen > raftmeta.MaxInboxMaxLen:
		return nil, api.BadRequest("invalid", "inbox_max_len must be 1..%d", raftmeta.MaxInboxMaxLen)
	case t.InboxTTL > 0 && (t.InboxTTL < time.Second || t.InboxTTL > srv.cfg.MaxTTL):
		return nil, api.BadRequest("invalid", "inbox_ttl must be 1s..%s, the nodes' own inbox TTL", srv.cfg.MaxTTL)
	case b.InFlightWindow < 0 || b.InFlightWindow > raftmeta.MaxInFlightWindow:
		return nil, api.BadRequest("invalid", "in_flight_window must be 1..%d", raftmeta.MaxInFlightWindow)
	case b.QueueFrames < 0 || b.QueueFrames > raftmeta.MaxQueueFrames:
		return nil, api.BadRequest("invalid", "queue_frames must be 1..%d", raftmeta.MaxQueueFrames)
	case b.QueueBytes < 0 || b.QueueBytes > raftmeta.MaxQueueBytes:
		return nil, api.BadRequest("invalid", "queue_bytes must be 1..%d", raftmeta.MaxQueueBytes)
	case b.QueueBytes > 0 && b.QueueBytes < srv.cfg.MaxFrame:
		return nil, api.BadRequest("invalid", "queue_bytes must hold at least one frame (%d bytes)", srv.cfg.MaxFrame)
	}
	t.InboxMaxLen, t.InFlightWindow, t.QueueFrames, t.QueueBytes = b.InboxMaxLen, b.InFlightWindow, b.QueueFrames, b.QueueBytes
	if t == (raftmeta.Tunables{}) {
		return nil, api.BadRequest("invalid", "give at least one tunable to set")
	}
	return srv.applyAnswer(ctx, c, raftmeta.SetTunables(t))
}

func (srv *server) adminTokens(context.Context, *adminCall) (any, error) {
	var out []api.AdminToken
	for _, t := range srv.meta.State().AdminTokens {
		out = append(out, api.AdminToken{ID: t.ID, Role: string(t.Role), Created: t.Created})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return map[string]any{"tokens": out}, nil
}

func (srv *server) adminCreateToken(ctx context.Context, c *adminCall) (any, error) {
	var b struct {
		ID   string        `json:"id"`
		Role raftmeta.Role `json:"role"`
	}
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	if !b.Role.Valid() {
		return nil, api.BadRequest("invalid", "role must be viewer, operator or admin")
	}
	secret, t := raftmeta.NewAdminToken(b.ID, b.Role)
	res, err := srv.apply(ctx, c, raftmeta.CreateAdminToken(t))
	if err != nil {
		return nil, err
	}
	if res.Replayed {
		return nil, shownOnce("admin token", "revoke it and create another")
	}
	return api.AdminTokenCreated{ID: t.ID, Role: string(t.Role), Token: secret}, nil
}

func (srv *server) adminRevokeToken(ctx context.Context, c *adminCall) (any, error) {
	if c.r.PathValue("id") == c.actor {
		return nil, api.BadRequest("invalid", "a token cannot revoke itself; use another admin token")
	}
	return srv.applyAnswer(ctx, c, raftmeta.RevokeAdminToken(c.r.PathValue("id")))
}

func (srv *server) adminAudit(context.Context, *adminCall) (any, error) {
	audit := srv.meta.State().Audit
	out := make([]api.AuditEntry, len(audit))
	for i, e := range audit {
		out[i] = api.AuditEntry{Index: e.Index, Time: e.Time, Actor: e.Actor, Op: e.Op, Target: e.Target, RequestID: e.RequestID, Summary: e.Summary}
	}
	return map[string]any{"entries": out}, nil
}

func (srv *server) adminDevice(ctx context.Context, c *adminCall) (any, error) {
	app, device := c.r.PathValue("app"), c.r.PathValue("device")
	if !token.ValidID(app) || !token.ValidID(device) {
		return nil, api.BadRequest("invalid", "app and device must be 1-128 letters, digits or ._:-")
	}
	return srv.core.DeviceState(ctx, app, device)
}
