package api

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Admin API types and endpoints, as documented in docs/admin-api.md.

// Member is one node of the region, as the region's metadata records it.
type Member struct {
	ID         string    `json:"id"`
	RaftAddr   string    `json:"raft_addr"`
	AdminAddr  string    `json:"admin_addr"`
	DeviceAddr string    `json:"device_addr"`
	TCPAddr    string    `json:"tcp_addr"`
	PushAddr   string    `json:"push_addr"`
	Weight     int       `json:"weight"`
	Draining   bool      `json:"draining"`
	Voter      bool      `json:"voter"`
	Joined     time.Time `json:"joined,omitzero"`
}

// NodeStatus is a member plus what the node itself reported. The
// reported fields are empty when Alive is false: the node did not answer
// within a second.
type NodeStatus struct {
	Member
	Alive bool `json:"alive"`
	// Region is the region the node says it belongs to (its --region):
	// every member should say the same.
	Region       string `json:"region,omitempty"`
	RaftState    string `json:"raft_state,omitempty"`
	LastIndex    uint64 `json:"last_index,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	Connections  int64  `json:"connections"`
	Redis        string `json:"redis,omitempty"`
	// Refusing says why the node takes no new devices: "starting",
	// "draining", "stopping" or "full"; "" while it takes them.
	Refusing string `json:"refusing,omitempty"`
	// Counters are the node's totals since it started (pushctl top
	// turns two readings into rates); nil when it did not answer.
	Counters *NodeCounters `json:"counters,omitempty"`
	// Certificate is the node's certificate; nil in a region without
	// TLS.
	Certificate *CertificateInfo `json:"certificate,omitempty"`
}

// NodeCounters are a node's running totals since its start, read at
// Time by the node's own clock.
type NodeCounters struct {
	Time time.Time `json:"time"`
	// Handshakes counts sessions opened (WELCOME sent).
	Handshakes uint64 `json:"handshakes"`
	// Pushes counts device messages its push API stored or delivered.
	Pushes uint64 `json:"pushes"`
	// Deliveries counts PUSH frames queued to its devices: live,
	// replayed, fetched, resent and group frames.
	Deliveries uint64 `json:"deliveries"`
	// Acks counts ACK frames from its devices.
	Acks uint64 `json:"acks"`
	// Retransmits counts PUSH frames resent because their ack was late.
	Retransmits uint64 `json:"retransmits"`
	// SlowConsumerCuts counts connections closed because their output
	// queue overflowed or stayed unwritten.
	SlowConsumerCuts uint64 `json:"slow_consumer_cuts"`
}

// RegionStatus answers GET /v1/admin/status. Leader is "" while no leader
// is known; Redis and RedisTopology are the answering node's view.
type RegionStatus struct {
	// Region is the answering node's region name.
	Region        string         `json:"region"`
	Leader        string         `json:"leader"`
	Nodes         []NodeStatus   `json:"nodes"`
	Degrade       DegradeState   `json:"degrade"`
	Redis         string         `json:"redis"`
	RedisTopology *RedisTopology `json:"redis_topology,omitempty"`
}

// RedisTopology is the region's Redis as a node reaches it: how the node
// is configured (Topology, Durability, the replicas each push waits for)
// and what the primaries report. Primaries is empty, and Error says why,
// when Redis could not be read; the whole is absent on a node without a
// store.
type RedisTopology struct {
	// Topology is "single", "sentinel" or "cluster".
	Topology string `json:"topology"`
	// Durability is "strict" or "fast".
	Durability string `json:"durability"`
	// WaitReplicas replicas must confirm a push within WaitTimeout (a Go
	// duration) before it is answered stored.
	WaitReplicas int            `json:"wait_replicas"`
	WaitTimeout  string         `json:"wait_timeout"`
	Primaries    []RedisPrimary `json:"primaries"`
	Error        string         `json:"error,omitempty"`
}

// RedisPrimary is one primary: on a cluster, one per shard.
type RedisPrimary struct {
	Addr string `json:"addr"`
	// Role is "master"; "slave" means --redis names a replica.
	Role string `json:"role"`
	// Slots are the cluster slot ranges it serves ("0-5460").
	Slots string `json:"slots,omitempty"`
	// AppendFsync is its appendfsync; "" when CONFIG GET is refused.
	AppendFsync string `json:"appendfsync"`
	// CPUSeconds is its redis-server's CPU time since it started.
	CPUSeconds float64        `json:"cpu_seconds"`
	Replicas   []RedisReplica `json:"replicas"`
}

// RedisReplica is a replica as its primary sees it.
type RedisReplica struct {
	Addr string `json:"addr"`
	// State is "online" once it streams; "wait_bgsave" or "send_bulk"
	// while it syncs.
	State string `json:"state"`
	// LagSeconds is how long ago it last acknowledged; BehindBytes how
	// much of the replication stream it had not.
	LagSeconds  int64 `json:"lag_seconds"`
	BehindBytes int64 `json:"behind_bytes"`
}

// DegradeState is the region's degrade policy. While Active, pushes at or
// below Priority of the listed Businesses (of every business when none are
// listed) are refused. After degrade off, Reason, By and Since describe
// the off command.
type DegradeState struct {
	Active     bool      `json:"active"`
	Priority   string    `json:"priority,omitempty"`
	Businesses []string  `json:"businesses,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	By         string    `json:"by,omitempty"`
	Since      time.Time `json:"since,omitzero"`
}

// DegradeRequest is the body of POST /v1/admin/degrade.
type DegradeRequest struct {
	Priority   string   `json:"priority"`
	Businesses []string `json:"businesses,omitempty"`
	Reason     string   `json:"reason"`
}

// JoinRequest is the body of POST /v1/admin/nodes/join. A nil Weight
// means the server's default (100).
type JoinRequest struct {
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	AdminAddr  string `json:"admin_addr"`
	DeviceAddr string `json:"device_addr,omitempty"`
	TCPAddr    string `json:"tcp_addr,omitempty"`
	PushAddr   string `json:"push_addr,omitempty"`
	Weight     *int   `json:"weight,omitempty"`
}

// App is an app as GET /v1/admin/apps lists it: ids of its secrets and
// API keys, never the values.
type App struct {
	ID      string   `json:"id"`
	KeyIDs  []string `json:"key_ids"`
	APIKeys []string `json:"api_keys"`
	AppLimits
	// ClientGroups says whether the app's devices may JOIN and LEAVE
	// groups themselves.
	ClientGroups bool      `json:"client_groups"`
	Created      time.Time `json:"created"`
}

// ClientGroupsRequest is the body of POST
// /v1/admin/apps/{id}/client-groups: whether the app's devices may JOIN
// and LEAVE groups themselves (required).
type ClientGroupsRequest struct {
	Allow *bool `json:"allow"`
}

// AppLimits are an app's adjustable limits. Zero MaxPayload is the
// server's default, zero RatePerSec and Burst are unlimited, and empty
// Businesses allows any business. POST /v1/admin/apps/{id}/limits
// replaces all four.
type AppLimits struct {
	MaxPayload int      `json:"max_payload"`
	RatePerSec int      `json:"rate_per_sec"`
	Burst      int      `json:"burst"`
	Businesses []string `json:"businesses"`
}

// AppCreated answers POST /v1/admin/apps: the only time the app's first
// secret and API key are shown.
type AppCreated struct {
	ID           string `json:"id"`
	KeyID        string `json:"key_id"`
	SecretBase64 string `json:"secret_base64"`
	APIKeyID     string `json:"api_key_id"`
	APIKey       string `json:"api_key"`
}

// SecretRotated answers POST /v1/admin/apps/{id}/rotate-secret.
type SecretRotated struct {
	KeyID        string `json:"key_id"`
	SecretBase64 string `json:"secret_base64"`
}

// APIKeyAdded answers POST /v1/admin/apps/{id}/api-keys.
type APIKeyAdded struct {
	APIKeyID string `json:"api_key_id"`
	APIKey   string `json:"api_key"`
}

// Applied answers a write that returns nothing else: the Raft index it
// was applied at, and whether an earlier attempt with the same request id
// had already applied it.
type Applied struct {
	Index    uint64 `json:"index"`
	Replayed bool   `json:"replayed,omitempty"`
}

// NodeRemoved answers POST /v1/admin/nodes/{id}/remove.
type NodeRemoved struct {
	Removed string `json:"removed"`
}

// Tunables are the region-wide delivery settings. In a POST, empty and
// zero fields keep their current value.
type Tunables struct {
	InboxMaxLen    int64  `json:"inbox_max_len,omitempty"`
	InboxTTL       string `json:"inbox_ttl,omitempty"`
	AckTimeout     string `json:"ack_timeout,omitempty"`
	AckBackoffMax  string `json:"ack_backoff_max,omitempty"`
	InFlightWindow int    `json:"in_flight_window,omitempty"`
	QueueFrames    int    `json:"queue_frames,omitempty"`
	QueueBytes     int    `json:"queue_bytes,omitempty"`
}

// AdminToken is an admin token as listed: never the token itself.
type AdminToken struct {
	ID      string    `json:"id"`
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
}

// AdminTokenCreated answers POST /v1/admin/tokens: the only time the token
// is shown.
type AdminTokenCreated struct {
	ID    string `json:"id"`
	Role  string `json:"role"`
	Token string `json:"token"`
}

// AuditEntry is one applied write.
type AuditEntry struct {
	Index     uint64    `json:"index"`
	Time      time.Time `json:"time"`
	Actor     string    `json:"actor"`
	Op        string    `json:"op"`
	Target    string    `json:"target"`
	RequestID string    `json:"request_id"`
	// Summary says what the write set (never a secret), when known.
	Summary string `json:"summary,omitempty"`
}

// Status returns the region at a glance.
func (c *Client) Status(ctx context.Context) (*RegionStatus, error) {
	var st RegionStatus
	if err := c.read(ctx, "/v1/admin/status", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// JoinNode adds a node to the region and returns its member record.
func (c *Client) JoinNode(ctx context.Context, req *JoinRequest) (*Member, error) {
	var m Member
	if err := c.write(ctx, http.MethodPost, "/v1/admin/nodes/join", req, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// RemoveNode takes a member out of the region.
func (c *Client) RemoveNode(ctx context.Context, id string) (*NodeRemoved, error) {
	var out NodeRemoved
	if err := c.write(ctx, http.MethodPost, "/v1/admin/nodes/"+url.PathEscape(id)+"/remove", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DrainNode starts or stops draining a member.
func (c *Client) DrainNode(ctx context.Context, id string, draining bool) (*Applied, error) {
	return c.applied(ctx, http.MethodPost, "/v1/admin/nodes/"+url.PathEscape(id)+"/drain", map[string]bool{"draining": draining})
}

// SetNodeWeight sets a member's share of new devices (0–1000).
func (c *Client) SetNodeWeight(ctx context.Context, id string, weight int) (*Applied, error) {
	return c.applied(ctx, http.MethodPost, "/v1/admin/nodes/"+url.PathEscape(id)+"/weight", map[string]int{"weight": weight})
}

// Apps lists the region's apps, sorted by id.
func (c *Client) Apps(ctx context.Context) ([]App, error) {
	var out struct {
		Apps []App `json:"apps"`
	}
	if err := c.read(ctx, "/v1/admin/apps", &out); err != nil {
		return nil, err
	}
	return out.Apps, nil
}

// CreateApp creates an app and returns its first secret and API key.
func (c *Client) CreateApp(ctx context.Context, id string, limits AppLimits) (*AppCreated, error) {
	body := struct {
		ID string `json:"id"`
		AppLimits
	}{id, limits}
	var out AppCreated
	if err := c.write(ctx, http.MethodPost, "/v1/admin/apps", body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RotateSecret adds a new token secret to an app.
func (c *Client) RotateSecret(ctx context.Context, app string) (*SecretRotated, error) {
	var out SecretRotated
	if err := c.write(ctx, http.MethodPost, "/v1/admin/apps/"+url.PathEscape(app)+"/rotate-secret", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AddAPIKey adds an API key to an app.
func (c *Client) AddAPIKey(ctx context.Context, app string) (*APIKeyAdded, error) {
	var out APIKeyAdded
	if err := c.write(ctx, http.MethodPost, "/v1/admin/apps/"+url.PathEscape(app)+"/api-keys", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeAPIKey removes one of an app's API keys.
func (c *Client) RevokeAPIKey(ctx context.Context, app, keyID string) (*Applied, error) {
	return c.applied(ctx, http.MethodDelete, "/v1/admin/apps/"+url.PathEscape(app)+"/api-keys/"+url.PathEscape(keyID), nil)
}

// SetAppLimits replaces an app's limits, all four of them.
func (c *Client) SetAppLimits(ctx context.Context, app string, limits AppLimits) (*Applied, error) {
	return c.applied(ctx, http.MethodPost, "/v1/admin/apps/"+url.PathEscape(app)+"/limits", limits)
}

// SetAppClientGroups says whether an app's devices may JOIN and LEAVE
// groups themselves.
func (c *Client) SetAppClientGroups(ctx context.Context, app string, allow bool) (*Applied, error) {
	return c.applied(ctx, http.MethodPost, "/v1/admin/apps/"+url.PathEscape(app)+"/client-groups", ClientGroupsRequest{Allow: &allow})
}

// DeleteApp deletes an app.
func (c *Client) DeleteApp(ctx context.Context, app string) (*Applied, error) {
	return c.applied(ctx, http.MethodDelete, "/v1/admin/apps/"+url.PathEscape(app), nil)
}

// Degrade returns the region's degrade policy.
func (c *Client) Degrade(ctx context.Context) (*DegradeState, error) {
	var out DegradeState
	if err := c.read(ctx, "/v1/admin/degrade", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetDegrade turns degrade on, or changes it.
func (c *Client) SetDegrade(ctx context.Context, req *DegradeRequest) (*Applied, error) {
	return c.applied(ctx, http.MethodPost, "/v1/admin/degrade", req)
}

// DegradeOff ends degrade.
func (c *Client) DegradeOff(ctx context.Context, reason string) (*Applied, error) {
	return c.applied(ctx, http.MethodPost, "/v1/admin/degrade/off", map[string]string{"reason": reason})
}

// Tunables returns the delivery settings in force on the node asked.
func (c *Client) Tunables(ctx context.Context) (*Tunables, error) {
	var out Tunables
	if err := c.read(ctx, "/v1/admin/tunables", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetTunables changes the region-wide delivery settings given in t.
func (c *Client) SetTunables(ctx context.Context, t *Tunables) (*Applied, error) {
	return c.applied(ctx, http.MethodPost, "/v1/admin/tunables", t)
}

// AdminTokens lists the admin tokens, sorted by id.
func (c *Client) AdminTokens(ctx context.Context) ([]AdminToken, error) {
	var out struct {
		Tokens []AdminToken `json:"tokens"`
	}
	if err := c.read(ctx, "/v1/admin/tokens", &out); err != nil {
		return nil, err
	}
	return out.Tokens, nil
}

// CreateAdminToken creates an admin token with a role and returns it.
func (c *Client) CreateAdminToken(ctx context.Context, id, role string) (*AdminTokenCreated, error) {
	var out AdminTokenCreated
	if err := c.write(ctx, http.MethodPost, "/v1/admin/tokens", map[string]string{"id": id, "role": role}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeAdminToken revokes an admin token; a token cannot revoke itself.
func (c *Client) RevokeAdminToken(ctx context.Context, id string) (*Applied, error) {
	return c.applied(ctx, http.MethodDelete, "/v1/admin/tokens/"+url.PathEscape(id), nil)
}

// Audit returns the region's last writes (at most 1,000), newest last.
func (c *Client) Audit(ctx context.Context) ([]AuditEntry, error) {
	var out struct {
		Entries []AuditEntry `json:"entries"`
	}
	if err := c.read(ctx, "/v1/admin/audit", &out); err != nil {
		return nil, err
	}
	return out.Entries, nil
}

func (c *Client) applied(ctx context.Context, method, path string, in any) (*Applied, error) {
	var out Applied
	if err := c.write(ctx, method, path, in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Retries. A write carries one X-Request-ID for all its attempts, so the
// region applies it at most once however often it is sent; that makes
// sending it again safe when the region said it could not take it for
// now (503 not_leader or unavailable) and when the connection failed
// before an answer came back (the write may or may not have arrived).
// Reads are sent again after a failed connection only. The node asked
// already waits up to 10 s for a leader before it answers 503, so these
// retries are for what that wait cannot cover: the node itself
// restarting, a leader still missing after it.
const (
	// retryBudget bounds the time from the first attempt to the start of
	// the last one.
	retryBudget = 20 * time.Second
	// minRetryWait is the first pause between attempts; each further
	// pause doubles it, up to maxRetryWait, and a Retry-After longer than
	// the pause is waited instead.
	minRetryWait = 100 * time.Millisecond
	maxRetryWait = 2 * time.Second
)

// write sends an admin write with a fresh request id, retrying it with the
// same id while the region cannot take it (see retryBudget).
func (c *Client) write(ctx context.Context, method, path string, in, out any) error {
	header := http.Header{}
	header.Set("X-Request-ID", rand.Text())
	return c.retry(ctx, method, path, true, func() error {
		return c.do(ctx, method, path, nil, header, in, out)
	})
}

// read sends an admin read, retrying it after a failed connection.
func (c *Client) read(ctx context.Context, path string, out any) error {
	return c.retry(ctx, http.MethodGet, path, false, func() error {
		return c.Do(ctx, http.MethodGet, path, nil, nil, out)
	})
}

// retry runs send until it succeeds, fails for good, or retryBudget is
// spent, pausing between attempts with a doubling backoff. write says
// whether a 503 not_leader or unavailable may be retried too (the request
// carries a request id).
func (c *Client) retry(ctx context.Context, method, path string, write bool, send func() error) error {
	start := time.Now()
	pause := minRetryWait
	for attempt := 1; ; attempt++ {
		err := send()
		reason, ok := retryable(ctx, err, write)
		if !ok {
			return err
		}
		wait := pause
		var ae *APIError
		if errors.As(err, &ae) {
			wait = max(wait, ae.RetryAfter)
		}
		if time.Since(start)+wait > retryBudget {
			tries := "1 attempt"
			if attempt > 1 {
				tries = fmt.Sprintf("%d attempts over %s", attempt, time.Since(start).Round(100*time.Millisecond))
			}
			return fmt.Errorf("%w; gave up after %s", err, tries)
		}
		if c.onRetry != nil {
			c.onRetry(Retry{Method: method, Path: path, Reason: reason, Wait: wait, SameRequestID: write})
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w; stopped retrying: %w", err, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, maxRetryWait)
	}
}

// Retry describes an attempt about to be sent again, for Client's onRetry.
type Retry struct {
	Method, Path string
	// Reason says why: the API's code and message, or the connection
	// error.
	Reason string
	Wait   time.Duration
	// SameRequestID is true for writes: the attempt carries the request
	// id of the first.
	SameRequestID bool
}

// retryable reports whether err is worth another attempt and why: the
// connection failed before an answer (any request), or the region could
// not take a write for now. Never when ctx ended.
func retryable(ctx context.Context, err error, write bool) (string, bool) {
	if err == nil || ctx.Err() != nil {
		return "", false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code + ": " + ae.Message, write && ae.regionBusy()
	}
	var op *net.OpError
	switch {
	case errors.As(err, &op):
		return "connection failed: " + op.Error(), true
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed before an answer", true
	}
	return "", false
}

// regionBusy reports whether the region could not take the write for now
// and said so: no leader known, or Raft or Redis did not finish in time.
func (e *APIError) regionBusy() bool {
	return e.Status == http.StatusServiceUnavailable && (e.Code == "not_leader" || e.Code == "unavailable")
}

// AlreadyApplied reports the region's answer to a retried write whose
// first attempt was applied but whose answer held a generated secret: the
// secret was lost with that answer and is not generated twice.
func (e *APIError) AlreadyApplied() bool {
	return e.Status == http.StatusConflict && strings.Contains(e.Message, "already applied")
}

// LocalStatus answers GET /v1/admin/local: one node's own view, which
// status gathers from every member.
type LocalStatus struct {
	ID           string `json:"id"`
	Region       string `json:"region"`
	RaftState    string `json:"raft_state"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	Leader       string `json:"leader"`
	Connections  int64  `json:"connections"`
	Redis        string `json:"redis"`
	Refusing     string `json:"refusing,omitempty"`
	// Counters are the node's totals since it started.
	Counters NodeCounters `json:"counters"`
	// Certificate is the node's certificate; nil in a region without
	// TLS.
	Certificate *CertificateInfo `json:"certificate,omitempty"`
	// Bridge is the node's Kafka bridge; nil when it has none.
	Bridge *BridgeStatus `json:"bridge,omitempty"`
}

// TraceEvent is one hop of a message on one node (docs/admin-api.md
// lists the events and their fields). Fields that do not apply to an
// event are left out.
type TraceEvent struct {
	Time  time.Time `json:"time"`
	Node  string    `json:"node"`
	Event string    `json:"event"`
	// App and Device name the device concerned (the app alone for
	// accepted).
	App    string `json:"app,omitempty"`
	Device string `json:"device,omitempty"`
	// Seq is the message's sequence number in the device's inbox.
	Seq uint64 `json:"seq,omitempty"`
	// accepted: the API key that authorized the push, and its targets.
	APIKey    string `json:"api_key,omitempty"`
	Devices   int    `json:"devices,omitempty"`
	Group     string `json:"group,omitempty"`
	Broadcast bool   `json:"broadcast,omitempty"`
	// stored: the node holding the device's connection ("" offline).
	Route     string `json:"route,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	// routed: the node whose delivery stream took an entry for Targets
	// of its devices (0: a group entry), or the Error that kept it.
	To      string `json:"to,omitempty"`
	Targets int    `json:"targets,omitempty"`
	Error   string `json:"error,omitempty"`
	// handed, written, retransmitted, acked, shed: the session.
	Session string `json:"session,omitempty"`
	// handed: live, replay, fetch or takeover.
	Via string `json:"via,omitempty"`
	// retransmitted: 2 for the first resend.
	Attempt int `json:"attempt,omitempty"`
	// fanout: the local sessions handed the group frame.
	Sessions *int `json:"sessions,omitempty"`
	// missed, not_stored: what happened instead.
	Reason string `json:"reason,omitempty"`
}

// Trace answers GET /v1/admin/trace/{id}: every event of a message the
// region's nodes still hold, in time order, and which nodes answered.
type Trace struct {
	ID     string       `json:"id"`
	Events []TraceEvent `json:"events"`
	Nodes  []TraceNode  `json:"nodes"`
}

// TraceNode says whether a member answered a trace lookup.
type TraceNode struct {
	ID     string `json:"id"`
	OK     bool   `json:"ok"`
	Events int    `json:"events"`
	Error  string `json:"error,omitempty"`
}

// LocalTrace answers GET /v1/admin/local/trace/{id}: one node's events.
type LocalTrace struct {
	Node   string       `json:"node"`
	Events []TraceEvent `json:"events"`
}

// Trace returns a message's journey across the region.
func (c *Client) Trace(ctx context.Context, id string) (*Trace, error) {
	var out Trace
	if err := c.read(ctx, "/v1/admin/trace/"+url.PathEscape(id), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CertificateInfo describes a node's certificate in a region that runs
// TLS: the certificate in use and whether the node keeps the region CA's
// key (and so issues certificates).
type CertificateInfo struct {
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	Names    []string  `json:"names"`
	CAKey    bool      `json:"ca_key"`
}

// SignRequest is the body of POST /v1/admin/tls/sign: a PEM certificate
// request, the kind of certificate (node: its common name is the node id;
// service: for a server such as Redis) and its validity in days (0: 365).
type SignRequest struct {
	CSR  string `json:"csr"`
	Kind string `json:"kind"`
	Days int    `json:"days,omitempty"`
}

// Signed answers POST /v1/admin/tls/sign: the certificate (PEM), the
// region's trust bundle (PEM), and the node whose CA key signed it.
type Signed struct {
	Certificate string    `json:"certificate"`
	CA          string    `json:"ca"`
	Serial      string    `json:"serial"`
	NotAfter    time.Time `json:"not_after"`
	IssuedBy    string    `json:"issued_by"`
}

// CertificateRotated answers POST /v1/admin/nodes/{id}/rotate-certificate.
type CertificateRotated struct {
	Node           string    `json:"node"`
	Serial         string    `json:"serial"`
	PreviousSerial string    `json:"previous_serial"`
	NotAfter       time.Time `json:"not_after"`
	Names          []string  `json:"names"`
	IssuedBy       string    `json:"issued_by"`
}

// Sign has a node holding the region CA's key sign a certificate request.
// It is not a Raft write: nothing is stored, so a retry signs again.
func (c *Client) Sign(ctx context.Context, req *SignRequest) (*Signed, error) {
	var out Signed
	if err := c.Do(ctx, http.MethodPost, "/v1/admin/tls/sign", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RotateCertificate gives node id a new key and certificate (valid for
// days; 0: 365), which it uses from its next connection on.
func (c *Client) RotateCertificate(ctx context.Context, id string, days int) (*CertificateRotated, error) {
	var out CertificateRotated
	body := map[string]int{}
	if days > 0 {
		body["days"] = days
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/admin/nodes/"+url.PathEscape(id)+"/rotate-certificate", nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
