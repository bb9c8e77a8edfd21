package appliance

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/raftmeta"
)

// The admin API: docs/admin-api.md. Reads are answered locally from the
// replicated state. Writes become Raft commands carrying the caller's
// token id (the audit actor) and request id, and run where the leader is
// (serveWrite): here when this node leads, else forwarded to the leader
// by forward, the one forwarding idiom of the node. Through an election
// a write waits for the next leader, up to its deadline; the request id
// makes sending it again safe, and a bound on hops keeps a request from
// chasing a moving leader for ever.

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

// adminCall is one authenticated admin request.
type adminCall struct {
	r         *http.Request
	body      []byte
	actor     string // the admin token's id
	requestID string
}

type adminHandler func(ctx context.Context, c *adminCall) (any, error)

// adminMux routes the admin API.
func (n *Node) adminMux() http.Handler {
	mux := http.NewServeMux()
	read := func(pattern string, h adminHandler) { mux.Handle(pattern, n.admin(raftmeta.RoleViewer, false, h)) }
	write := func(pattern string, role raftmeta.Role, h adminHandler) { mux.Handle(pattern, n.admin(role, true, h)) }

	read("GET /v1/admin/status", n.adminStatus)
	read("GET /v1/admin/local", n.adminLocal)
	write("POST /v1/admin/nodes/join", raftmeta.RoleAdmin, n.adminJoin)
	write("POST /v1/admin/nodes/{id}/remove", raftmeta.RoleAdmin, noBody(n.adminRemove))
	write("POST /v1/admin/nodes/{id}/drain", raftmeta.RoleOperator, n.adminDrain)
	write("POST /v1/admin/nodes/{id}/weight", raftmeta.RoleOperator, n.adminWeight)

	read("GET /v1/admin/apps", n.adminApps)
	write("POST /v1/admin/apps", raftmeta.RoleAdmin, n.adminCreateApp)
	write("POST /v1/admin/apps/{id}/rotate-secret", raftmeta.RoleAdmin, noBody(n.adminRotateSecret))
	write("POST /v1/admin/apps/{id}/api-keys", raftmeta.RoleAdmin, noBody(n.adminAddAPIKey))
	write("DELETE /v1/admin/apps/{id}/api-keys/{key}", raftmeta.RoleAdmin, noBody(n.adminRevokeAPIKey))
	write("POST /v1/admin/apps/{id}/limits", raftmeta.RoleAdmin, n.adminSetLimits)
	write("DELETE /v1/admin/apps/{id}", raftmeta.RoleAdmin, noBody(n.adminDeleteApp))

	read("GET /v1/admin/degrade", n.adminDegrade)
	write("POST /v1/admin/degrade", raftmeta.RoleOperator, n.adminSetDegrade)
	write("POST /v1/admin/degrade/off", raftmeta.RoleOperator, n.adminDegradeOff)

	read("GET /v1/admin/tunables", n.adminTunables)
	write("POST /v1/admin/tunables", raftmeta.RoleAdmin, n.adminSetTunables)

	mux.Handle("GET /v1/admin/tokens", n.admin(raftmeta.RoleAdmin, false, n.adminTokens))
	write("POST /v1/admin/tokens", raftmeta.RoleAdmin, n.adminCreateToken)
	write("DELETE /v1/admin/tokens/{id}", raftmeta.RoleAdmin, noBody(n.adminRevokeToken))

	read("GET /v1/admin/audit", n.adminAudit)
	// Profiles of this node, for admins only: they expose memory contents.
	mux.Handle("/debug/pprof/", n.adminOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", n.adminOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/trace", n.adminOnly(http.HandlerFunc(pprof.Trace)))
	read("GET /v1/admin/devices/{app}/{device}", n.adminDevice)
	mux.HandleFunc("/healthz", n.serveHealth)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{status: http.StatusNotFound, code: "not_found", msg: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return mux
}

// admin wraps a handler with authentication, the role check, body
// reading, and error mapping; writes go through serveWrite.
func (n *Node) admin(role raftmeta.Role, write bool, h adminHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		have, id, aerr := n.adminToken(r)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		if !have.Allows(role) {
			writeError(w, &apiError{status: http.StatusForbidden, code: "forbidden", msg: fmt.Sprintf("this call needs the %s role; the token has %s", role, have)})
			return
		}
		body, err := readBody(r, maxAdminBody)
		if err != nil {
			writeError(w, err.(*apiError))
			return
		}
		c := &adminCall{r: r, body: body, actor: id, requestID: r.Header.Get("X-Request-ID")}
		if write {
			if c.requestID == "" {
				c.requestID = raftmeta.NewRequestID()
			}
			ctx, cancel := context.WithTimeout(r.Context(), writeTimeout(r))
			defer cancel()
			n.serveWrite(ctx, w, c, h)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), adminReadTimeout)
		defer cancel()
		out, err := h(ctx, c)
		if err != nil {
			writeError(w, adminError(err))
			return
		}
		writeJSON(w, http.StatusOK, out)
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
func (n *Node) serveWrite(ctx context.Context, w http.ResponseWriter, c *adminCall, h adminHandler) {
	changes, unsubscribe := n.meta.Changes()
	defer unsubscribe()
	var last *apiError // the answer if the deadline passes
	pause := writeRetryMin
	for {
		if n.meta.IsLeader() {
			out, err := h(ctx, c)
			if err == nil {
				writeJSON(w, http.StatusOK, out)
				return
			}
			if !leadershipMoved(err) || ctx.Err() != nil {
				writeError(w, adminError(err))
				return
			}
			last = adminError(err)
			n.log.Info("admin write: leadership moved while it was applied; sending it to the next leader", "request_id", c.requestID, "err", err)
		} else if leader, ok := n.meta.LeaderMember(); !ok || leader.ID == n.cfg.NodeID || leader.AdminAddr == "" {
			last = &apiError{status: http.StatusServiceUnavailable, code: "not_leader", msg: "no leader known right now; retry", retryAfter: time.Second}
		} else if c.hops() >= maxForwardHops {
			writeError(w, &apiError{status: http.StatusServiceUnavailable, code: "not_leader", retryAfter: time.Second,
				msg: fmt.Sprintf("forwarded %d times and this node (%s) does not lead either: leadership keeps moving; retry", c.hops(), n.cfg.NodeID)})
			return
		} else {
			ans, err := n.forward(ctx, c, leader)
			switch {
			case err != nil:
				last = &apiError{status: http.StatusServiceUnavailable, code: "not_leader", msg: "leader " + leader.ID + " unreachable: " + err.Error(), retryAfter: time.Second}
			case ans.status == http.StatusServiceUnavailable && ans.code == "not_leader" && c.hops() == 0:
				// It lost leadership and found no leader to send it on
				// to within its hops: this node's view may be better by
				// now. Only the node the caller asked tries again, so a
				// chain of forwards does not multiply attempts.
				last = &apiError{status: ans.status, code: ans.code, msg: "forwarded to " + leader.ID + ": " + ans.msg, retryAfter: time.Second}
			default:
				ans.write(w)
				return
			}
		}
		switch waitRetry(ctx, changes, pause) {
		case waitDeadline:
			last.msg = fmt.Sprintf("no leader took the write within %s: %s", writeTimeout(c.r), last.msg)
			writeError(w, last)
			return
		case waitClosed:
			writeError(w, &apiError{status: http.StatusServiceUnavailable, code: "unavailable", retryAfter: time.Second,
				msg: "this node's region metadata is closed (shutting down): " + last.msg})
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
func (n *Node) forward(ctx context.Context, c *adminCall, leader raftmeta.Member) (*forwarded, error) {
	dl, _ := ctx.Deadline()
	left := time.Until(dl) - forwardSlack
	if left <= 0 {
		return nil, context.DeadlineExceeded
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Watch for the leader changing under the request.
	changes, unsubscribe := n.meta.Changes()
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
				if now, ok := n.meta.LeaderMember(); !ok || now.ID != leader.ID {
					cancel(fmt.Errorf("leadership moved from %s while the request was on its way", leader.ID))
					return
				}
			}
		}
	}()
	defer func() { close(done); <-watched }()

	req, err := http.NewRequestWithContext(ctx, c.r.Method, "http://"+leader.AdminAddr+c.r.URL.RequestURI(), bytes.NewReader(c.body))
	if err != nil {
		return nil, err
	}
	chain := n.cfg.NodeID
	if prev := c.r.Header.Get(forwardedHeader); prev != "" {
		chain = prev + "," + chain
	}
	req.Header.Set("Authorization", c.r.Header.Get("Authorization"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-ID", c.requestID)
	req.Header.Set(forwardedHeader, chain)
	req.Header.Set(timeLeftHeader, strconv.FormatInt(left.Milliseconds(), 10))
	resp, err := n.adminClient.Do(req)
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
func (n *Node) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		role, _, aerr := n.adminToken(r)
		switch {
		case aerr != nil:
			writeError(w, aerr)
		case !role.Allows(raftmeta.RoleAdmin):
			writeError(w, &apiError{status: http.StatusForbidden, code: "forbidden", msg: "profiles need the admin role; the token has " + string(role)})
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
func (n *Node) adminToken(r *http.Request) (raftmeta.Role, string, *apiError) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	unauthorized := &apiError{status: http.StatusUnauthorized, code: "unauthorized", msg: "missing or unknown admin token"}
	if tok == "" {
		return "", "", unauthorized
	}
	if role, id, ok := n.meta.State().AdminRole(tok); ok {
		return role, id, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), recheckTimeout)
	defer cancel()
	if err := n.meta.Sync(ctx); err != nil {
		return "", "", &apiError{status: http.StatusServiceUnavailable, code: "unavailable",
			msg: "cannot reach the region's metadata to check this admin token; retry", retryAfter: time.Second}
	}
	if role, id, ok := n.meta.State().AdminRole(tok); ok {
		return role, id, nil
	}
	return "", "", unauthorized
}

// adminError maps an error to its HTTP answer.
func adminError(err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, raftmeta.ErrNotFound):
		return &apiError{status: http.StatusNotFound, code: "not_found", msg: err.Error()}
	case errors.Is(err, raftmeta.ErrConflict):
		return &apiError{status: http.StatusConflict, code: "conflict", msg: err.Error()}
	case errors.Is(err, raftmeta.ErrInvalid):
		return &apiError{status: http.StatusBadRequest, code: "invalid", msg: err.Error()}
	case errors.Is(err, raftmeta.ErrNotLeader):
		return &apiError{status: http.StatusServiceUnavailable, code: "not_leader", msg: err.Error(), retryAfter: time.Second}
	case errors.Is(err, raftmeta.ErrLeadershipLost), errors.Is(err, raftmeta.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return &apiError{status: http.StatusServiceUnavailable, code: "unavailable", msg: err.Error(), retryAfter: time.Second}
	}
	return &apiError{status: http.StatusInternalServerError, code: "internal", msg: err.Error()}
}

// decode parses the call's JSON body strictly into v (decodeStrict: no
// key twice, no unknown or miscased field, one value). An empty body is
// an empty object.
func (c *adminCall) decode(v any) error {
	body := c.body
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if err := decodeStrict(body, v); err != nil {
		return badRequest("bad_json", "body: %v", err)
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
func (n *Node) apply(ctx context.Context, c *adminCall, cmd raftmeta.Command) (raftmeta.Result, error) {
	cmd.RequestID, cmd.Actor = c.requestID, c.actor
	return n.meta.Apply(ctx, cmd)
}

// applied is the answer to a write that returns nothing else.
type applied struct {
	Index    uint64 `json:"index"`
	Replayed bool   `json:"replayed,omitempty"`
}

func (n *Node) applyAnswer(ctx context.Context, c *adminCall, cmd raftmeta.Command) (any, error) {
	res, err := n.apply(ctx, c, cmd)
	if err != nil {
		return nil, err
	}
	return applied{Index: res.Index, Replayed: res.Replayed}, nil
}

// shownOnce refuses to answer a replayed write whose answer held a
// freshly generated credential: the retry generated another that was
// never stored. remedy says how to get a new one.
func shownOnce(what, remedy string) *apiError {
	return &apiError{status: http.StatusConflict, code: "conflict",
		msg: "this request id was already applied; the " + what + " it created was shown then and is not shown again (" + remedy + ")"}
}

// --- nodes and status ---

type nodeStatus struct {
	raftmeta.Member
	Alive        bool   `json:"alive"`
	RaftState    string `json:"raft_state,omitempty"`
	LastIndex    uint64 `json:"last_index,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	Connections  int64  `json:"connections"`
	Redis        string `json:"redis,omitempty"`
}

type localStatus struct {
	ID           string `json:"id"`
	RaftState    string `json:"raft_state"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	Leader       string `json:"leader"`
	Connections  int64  `json:"connections"`
	Redis        string `json:"redis"`
}

func (n *Node) local() localStatus {
	s := n.meta.Stats()
	redis := "up"
	if !n.redisHealthy() {
		redis = "down"
	}
	return localStatus{ID: n.cfg.NodeID, RaftState: s.State, Term: s.Term, LastIndex: s.LastLogIndex,
		AppliedIndex: s.AppliedIndex, CommitIndex: s.CommitIndex, Leader: s.LeaderID,
		Connections: n.hub.count.Load(), Redis: redis}
}

func (n *Node) adminLocal(context.Context, *adminCall) (any, error) { return n.local(), nil }

// adminStatus asks every member for its local status in parallel and
// lists those that do not answer within a second as not alive.
func (n *Node) adminStatus(ctx context.Context, c *adminCall) (any, error) {
	st := n.meta.State()
	nodes := make([]nodeStatus, 0, len(st.Members))
	for _, m := range st.Members {
		nodes = append(nodes, nodeStatus{Member: m})
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func(ns *nodeStatus) {
			defer wg.Done()
			var ls localStatus
			if ns.ID == n.cfg.NodeID {
				ls = n.local()
			} else if err := n.askLocal(ctx, ns.AdminAddr, c.r.Header.Get("Authorization"), &ls); err != nil {
				return
			}
			ns.Alive, ns.RaftState, ns.LastIndex, ns.AppliedIndex = true, ls.RaftState, ls.LastIndex, ls.AppliedIndex
			ns.Connections, ns.Redis = ls.Connections, ls.Redis
		}(&nodes[i])
	}
	wg.Wait()
	redis := "up"
	if !n.redisHealthy() {
		redis = "down"
	}
	leader, _ := n.meta.LeaderMember()
	return map[string]any{"leader": leader.ID, "nodes": nodes, "degrade": degradeAnswer(st.Degrade), "redis": redis}, nil
}

func (n *Node) askLocal(ctx context.Context, addr, auth string, out *localStatus) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/admin/local", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", auth)
	resp, err := n.adminClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", addr, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

type joinRequest struct {
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	AdminAddr  string `json:"admin_addr"`
	DeviceAddr string `json:"device_addr"`
	TCPAddr    string `json:"tcp_addr"`
	PushAddr   string `json:"push_addr"`
	Weight     *int   `json:"weight"`
}

func (n *Node) adminJoin(ctx context.Context, c *adminCall) (any, error) {
	var j joinRequest
	if err := c.decode(&j); err != nil {
		return nil, err
	}
	if !token.ValidID(j.ID) || j.RaftAddr == "" || j.AdminAddr == "" {
		return nil, badRequest("invalid", "id, raft_addr and admin_addr are required")
	}
	weight := 100
	if j.Weight != nil {
		weight = *j.Weight
	}
	m := raftmeta.Member{ID: j.ID, RaftAddr: j.RaftAddr, AdminAddr: j.AdminAddr, DeviceAddr: j.DeviceAddr,
		TCPAddr: j.TCPAddr, PushAddr: j.PushAddr, Weight: weight}
	if err := n.meta.Join(ctx, m, c.caller()); err != nil {
		return nil, err
	}
	if joined, ok := n.meta.State().Members[j.ID]; ok {
		m = joined
	}
	return m, nil
}

// adminRemove takes a member out of the region. Writes run on the leader,
// so removing the leader itself is a leave: it hands leadership on and
// stops taking part in Raft; stop its pushd afterwards. A retry with the
// request id of a remove that went through answers the same, on this
// leader or the next.
func (n *Node) adminRemove(ctx context.Context, c *adminCall) (any, error) {
	id := c.r.PathValue("id")
	var err error
	if id == n.cfg.NodeID {
		err = n.meta.Leave(ctx, c.caller())
	} else {
		err = n.meta.Remove(ctx, id, c.caller())
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"removed": id}, nil
}

// caller is the call as the asker of a membership change: the token id
// for the audit and the request id, as apply puts them on a command.
func (c *adminCall) caller() raftmeta.Caller {
	return raftmeta.Caller{RequestID: c.requestID, Actor: c.actor}
}

func (n *Node) adminDrain(ctx context.Context, c *adminCall) (any, error) {
	var b struct {
		Draining *bool `json:"draining"`
	}
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	if b.Draining == nil {
		return nil, badRequest("invalid", "draining (true or false) is required")
	}
	return n.applyAnswer(ctx, c, raftmeta.SetMemberDrain(c.r.PathValue("id"), *b.Draining))
}

func (n *Node) adminWeight(ctx context.Context, c *adminCall) (any, error) {
	var b struct {
		Weight *int `json:"weight"`
	}
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	if b.Weight == nil || *b.Weight < 0 || *b.Weight > 1000 {
		return nil, badRequest("invalid", "weight must be 0..1000")
	}
	return n.applyAnswer(ctx, c, raftmeta.SetMemberWeight(c.r.PathValue("id"), *b.Weight))
}

// --- apps ---

type appAnswer struct {
	ID         string    `json:"id"`
	KeyIDs     []string  `json:"key_ids"`
	APIKeys    []string  `json:"api_keys"`
	MaxPayload int       `json:"max_payload"`
	RatePerSec int       `json:"rate_per_sec"`
	Burst      int       `json:"burst"`
	Businesses []string  `json:"businesses"`
	Created    time.Time `json:"created"`
}

func (n *Node) adminApps(context.Context, *adminCall) (any, error) {
	st := n.meta.State()
	apps := make([]appAnswer, 0, len(st.Apps))
	for _, a := range st.Apps {
		out := appAnswer{ID: a.ID, MaxPayload: a.MaxPayload, RatePerSec: a.RatePerSec, Burst: a.Burst, Businesses: a.Businesses, Created: a.Created}
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

type limitsRequest struct {
	MaxPayload int      `json:"max_payload"`
	RatePerSec int      `json:"rate_per_sec"`
	Burst      int      `json:"burst"`
	Businesses []string `json:"businesses"`
}

func (n *Node) adminCreateApp(ctx context.Context, c *adminCall) (any, error) {
	var b struct {
		ID string `json:"id"`
		limitsRequest
	}
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	secret := raftmeta.NewSecret("k1")
	key, apiKey := raftmeta.NewAPIKey("key-1")
	res, err := n.apply(ctx, c, raftmeta.CreateApp(raftmeta.App{ID: b.ID, Secrets: []raftmeta.Secret{secret}, APIKeys: []raftmeta.APIKey{apiKey},
		MaxPayload: b.MaxPayload, RatePerSec: b.RatePerSec, Burst: b.Burst, Businesses: b.Businesses}))
	if err != nil {
		return nil, err
	}
	if res.Replayed {
		return nil, shownOnce("token secret and API key", "rotate the secret and add an API key to get new ones")
	}
	return map[string]string{"id": b.ID, "key_id": secret.KeyID, "secret_base64": base64.StdEncoding.EncodeToString(secret.Secret),
		"api_key_id": apiKey.ID, "api_key": key}, nil
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

func (n *Node) appOf(c *adminCall) (raftmeta.App, error) {
	a, ok := n.meta.State().App(c.r.PathValue("id"))
	if !ok {
		return a, fmt.Errorf("app %s: %w", c.r.PathValue("id"), raftmeta.ErrNotFound)
	}
	return a, nil
}

func (n *Node) adminRotateSecret(ctx context.Context, c *adminCall) (any, error) {
	a, err := n.appOf(c)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range a.Secrets {
		ids = append(ids, s.KeyID)
	}
	secret := raftmeta.NewSecret(nextID("k", ids))
	res, err := n.apply(ctx, c, raftmeta.RotateAppSecret(a.ID, secret))
	if err != nil {
		return nil, err
	}
	if res.Replayed {
		return nil, shownOnce("token secret", "rotate again to get a new one")
	}
	return map[string]string{"key_id": secret.KeyID, "secret_base64": base64.StdEncoding.EncodeToString(secret.Secret)}, nil
}

func (n *Node) adminAddAPIKey(ctx context.Context, c *adminCall) (any, error) {
	a, err := n.appOf(c)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, k := range a.APIKeys {
		ids = append(ids, k.ID)
	}
	key, apiKey := raftmeta.NewAPIKey(nextID("key-", ids))
	res, err := n.apply(ctx, c, raftmeta.AddAPIKey(a.ID, apiKey))
	if err != nil {
		return nil, err
	}
	if res.Replayed {
		return nil, shownOnce("API key", "revoke it and add another")
	}
	return map[string]string{"api_key_id": apiKey.ID, "api_key": key}, nil
}

func (n *Node) adminRevokeAPIKey(ctx context.Context, c *adminCall) (any, error) {
	return n.applyAnswer(ctx, c, raftmeta.RevokeAPIKey(c.r.PathValue("id"), c.r.PathValue("key")))
}

func (n *Node) adminSetLimits(ctx context.Context, c *adminCall) (any, error) {
	var b limitsRequest
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	return n.applyAnswer(ctx, c, raftmeta.SetAppLimits(c.r.PathValue("id"),
		raftmeta.AppLimits{MaxPayload: b.MaxPayload, RatePerSec: b.RatePerSec, Burst: b.Burst, Businesses: b.Businesses}))
}

func (n *Node) adminDeleteApp(ctx context.Context, c *adminCall) (any, error) {
	return n.applyAnswer(ctx, c, raftmeta.DeleteApp(c.r.PathValue("id")))
}

// --- degrade ---

type degradeJSON struct {
	Active     bool      `json:"active"`
	Priority   string    `json:"priority,omitempty"`
	Businesses []string  `json:"businesses,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	By         string    `json:"by,omitempty"`
	Since      time.Time `json:"since,omitzero"`
}

func degradeAnswer(d raftmeta.Degrade) degradeJSON {
	out := degradeJSON{Active: d.Active, Businesses: d.Businesses, Reason: d.Reason, By: d.By, Since: d.Since}
	if d.Active {
		out.Priority = wire.Priority(d.Priority).String()
	}
	return out
}

func (n *Node) adminDegrade(context.Context, *adminCall) (any, error) {
	return degradeAnswer(n.meta.State().Degrade), nil
}

func (n *Node) adminSetDegrade(ctx context.Context, c *adminCall) (any, error) {
	var b struct {
		Priority   string   `json:"priority"`
		Businesses []string `json:"businesses"`
		Reason     string   `json:"reason"`
	}
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	if b.Priority == "" {
		return nil, badRequest("invalid", "priority (low, normal or high) is required")
	}
	p, err := wire.ParsePriority(b.Priority)
	if err != nil {
		return nil, badRequest("invalid", "%v", err)
	}
	if b.Reason == "" {
		return nil, badRequest("invalid", "reason is required: it is shown to operators and devices")
	}
	return n.applyAnswer(ctx, c, raftmeta.SetDegrade(raftmeta.Degrade{Priority: raftmeta.Priority(p),
		Businesses: b.Businesses, Reason: b.Reason}))
}

func (n *Node) adminDegradeOff(ctx context.Context, c *adminCall) (any, error) {
	var b struct {
		Reason string `json:"reason"`
	}
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	return n.applyAnswer(ctx, c, raftmeta.DegradeOff(b.Reason))
}

// --- tunables, tokens, audit, devices ---

type tunablesJSON struct {
	InboxMaxLen    int64  `json:"inbox_max_len,omitempty"`
	InboxTTL       string `json:"inbox_ttl,omitempty"`
	AckTimeout     string `json:"ack_timeout,omitempty"`
	AckBackoffMax  string `json:"ack_backoff_max,omitempty"`
	InFlightWindow int    `json:"in_flight_window,omitempty"`
	QueueFrames    int    `json:"queue_frames,omitempty"`
	QueueBytes     int    `json:"queue_bytes,omitempty"`
}

func (n *Node) adminTunables(context.Context, *adminCall) (any, error) {
	t := n.tun.Load()
	return tunablesJSON{InboxMaxLen: t.inboxMaxLen, InboxTTL: t.maxTTL.String(),
		AckTimeout: t.ackTimeout.String(), AckBackoffMax: t.ackBackoffMax.String(),
		InFlightWindow: t.window, QueueFrames: t.queueFrames, QueueBytes: t.queueBytes}, nil
}

// adminSetTunables sets the tunables the body names; the region keeps the
// others (the FSM merges), so concurrent changes of different settings
// both stand.
func (n *Node) adminSetTunables(ctx context.Context, c *adminCall) (any, error) {
	var b tunablesJSON
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
			return nil, badRequest("invalid", "%s: want a positive duration like 10s", d.key)
		}
		*d.dst = v
	}
	switch {
	case b.InboxMaxLen < 0 || b.InboxMaxLen > raftmeta.MaxInboxMaxLen:
		return nil, badRequest("invalid", "inbox_max_len must be 1..%d", raftmeta.MaxInboxMaxLen)
	case t.InboxTTL > 0 && (t.InboxTTL < time.Second || t.InboxTTL > n.cfg.MaxTTL):
		return nil, badRequest("invalid", "inbox_ttl must be 1s..%s, the nodes' own inbox TTL", n.cfg.MaxTTL)
	case b.InFlightWindow < 0 || b.InFlightWindow > raftmeta.MaxInFlightWindow:
		return nil, badRequest("invalid", "in_flight_window must be 1..%d", raftmeta.MaxInFlightWindow)
	case b.QueueFrames < 0 || b.QueueFrames > raftmeta.MaxQueueFrames:
		return nil, badRequest("invalid", "queue_frames must be 1..%d", raftmeta.MaxQueueFrames)
	case b.QueueBytes < 0 || b.QueueBytes > raftmeta.MaxQueueBytes:
		return nil, badRequest("invalid", "queue_bytes must be 1..%d", raftmeta.MaxQueueBytes)
	case b.QueueBytes > 0 && b.QueueBytes < n.cfg.MaxFrame:
		return nil, badRequest("invalid", "queue_bytes must hold at least one frame (%d bytes)", n.cfg.MaxFrame)
	}
	t.InboxMaxLen, t.InFlightWindow, t.QueueFrames, t.QueueBytes = b.InboxMaxLen, b.InFlightWindow, b.QueueFrames, b.QueueBytes
	if t == (raftmeta.Tunables{}) {
		return nil, badRequest("invalid", "give at least one tunable to set")
	}
	return n.applyAnswer(ctx, c, raftmeta.SetTunables(t))
}

func (n *Node) adminTokens(context.Context, *adminCall) (any, error) {
	type tok struct {
		ID      string        `json:"id"`
		Role    raftmeta.Role `json:"role"`
		Created time.Time     `json:"created"`
	}
	var out []tok
	for _, t := range n.meta.State().AdminTokens {
		out = append(out, tok{ID: t.ID, Role: t.Role, Created: t.Created})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return map[string]any{"tokens": out}, nil
}

func (n *Node) adminCreateToken(ctx context.Context, c *adminCall) (any, error) {
	var b struct {
		ID   string        `json:"id"`
		Role raftmeta.Role `json:"role"`
	}
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	if !b.Role.Valid() {
		return nil, badRequest("invalid", "role must be viewer, operator or admin")
	}
	secret, t := raftmeta.NewAdminToken(b.ID, b.Role)
	res, err := n.apply(ctx, c, raftmeta.CreateAdminToken(t))
	if err != nil {
		return nil, err
	}
	if res.Replayed {
		return nil, shownOnce("admin token", "revoke it and create another")
	}
	return map[string]string{"id": t.ID, "role": string(t.Role), "token": secret}, nil
}

func (n *Node) adminRevokeToken(ctx context.Context, c *adminCall) (any, error) {
	if c.r.PathValue("id") == c.actor {
		return nil, badRequest("invalid", "a token cannot revoke itself; use another admin token")
	}
	return n.applyAnswer(ctx, c, raftmeta.RevokeAdminToken(c.r.PathValue("id")))
}

func (n *Node) adminAudit(context.Context, *adminCall) (any, error) {
	return map[string]any{"entries": n.meta.State().Audit}, nil
}

func (n *Node) adminDevice(ctx context.Context, c *adminCall) (any, error) {
	app, device := c.r.PathValue("app"), c.r.PathValue("device")
	if !token.ValidID(app) || !token.ValidID(device) {
		return nil, badRequest("invalid", "app and device must be 1-128 letters, digits or ._:-")
	}
	return n.deviceState(ctx, app, device)
}
