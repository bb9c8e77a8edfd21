package streams

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	// ErrUnavailable means Redis could not be reached or did not answer in
	// time (connection refused or reset, deadline exceeded, still loading
	// its data, not a writable primary). An operation that failed with it
	// may or may not have been applied; Append and AckMany are safe to
	// retry. It is always wrapped together with the underlying error.
	ErrUnavailable = errors.New("redis unavailable")

	// ErrInvalidArgument means a device, node or message id is empty or
	// holds '{' or '}' (which would move the keys' hash tag), or a TTL or a
	// Message.MaxLen is negative. Nothing was sent to Redis.
	ErrInvalidArgument = errors.New("invalid argument")

	// ErrExpired is returned by Append for a message whose Created+TTL has
	// already passed. Nothing was stored.
	ErrExpired = errors.New("message already expired")

	// ErrNodeAlive is returned by RetireNode for a node whose heartbeat
	// has not expired.
	ErrNodeAlive = errors.New("node is alive")

	// ErrNotDrained is returned by RetireNode while the node's delivery
	// stream still holds pending or unread entries.
	ErrNotDrained = errors.New("delivery stream not drained")

	// ErrNotReplicated is returned by Append when its writes reached the
	// primary but fewer than Config.WaitReplicas replicas confirmed them
	// within Config.WaitTimeout: a failover now could lose them, so they
	// must not be reported stored. It always comes wrapped together with
	// ErrUnavailable (retry, as after any other unavailability; the retry
	// finds the message by its id and waits for the replicas again).
	ErrNotReplicated = errors.New("not confirmed by enough replicas")
)

// Config bounds what the Store keeps in Redis. Every field's zero value
// selects the default given in its comment.
type Config struct {
	// InboxMaxLen caps a device's unacked entries; when an append goes past
	// it, the oldest unacked entries are trimmed and the device's next
	// Resume from before them reports Recovered=false. An append whose
	// Message.MaxLen is set uses that cap instead. It is also the default
	// limit of Resume and ReadMany. 0 means 1000.
	InboxMaxLen int64

	// InboxTTL is how long a device's inbox, meta and dedupe keys outlive
	// its last Append or Resume, and the longest TTL a message may have.
	// The keys get InboxTTL plus a sixteenth, renewed only when less than
	// InboxTTL is left, which spares most appends three PEXPIREs while no
	// message outlives its inbox. 0 means 72h.
	InboxTTL time.Duration

	// DedupeWindow is how many of a device's most recent message ids are
	// remembered, so that a retried Append stores nothing new. 0 means
	// InboxMaxLen.
	DedupeWindow int64

	// DeliveryMaxLen caps each node's delivery stream (approximately: MAXLEN
	// ~ trims whole stream nodes). 0 means 100000.
	DeliveryMaxLen int64

	// RouteTTL is the TTL of a device's route; the owning node renews it
	// with RefreshRoutes. 0 means 24h.
	RouteTTL time.Duration

	// NodeTTL is the TTL of a node's heartbeat key: a node that has not
	// called Heartbeat for this long is dead to Nodes, and its next
	// Heartbeat reports continued=false. 0 means 10s.
	NodeTTL time.Duration

	// ScriptBatch is how many devices one Append or AckMany script call
	// handles on a standalone Redis (rdb is a *redis.Client): batching
	// spreads a call's fixed cost, and Append's payload, over many devices
	// (DESIGN.md has the figures). With any other client (cluster, ring) a
	// call holds one device, since its keys must share one hash slot; set 1
	// to get that on a standalone client too, for example behind a cluster
	// proxy. 0 means 32.
	ScriptBatch int

	// ClaimMinIdle is how long a pending delivery must have been idle before
	// TakeOver claims it. It keeps two takers, or a taker and a node that
	// came back, from stealing each other's in-flight entries. 0 means 2s.
	ClaimMinIdle time.Duration

	// WaitReplicas is how many replicas must confirm an Append's writes
	// before it returns them: each primary the append wrote to runs WAIT
	// WaitReplicas WaitTimeout at the end of the same pipeline (WAIT
	// counts the writes of its own connection, and Redis 7.0 refuses it
	// inside a script). Fewer confirmations fail the Append with
	// ErrNotReplicated. With Sentinel or Cluster failover, 1 means an
	// acknowledged append survives the loss of its primary; 0 (the
	// default) waits for nothing, as on a single server.
	//
	// The reads that hand entries to devices wait too (Resume, Open,
	// ReadMany): an entry an append wrote but no replica has yet must
	// not reach a device, since a failover could then give its seq to
	// another message, which the device would take for a repeat. Redis
	// 7.0's WAIT also counts what its connection read
	// (TestStore_ReadsWaitForReplicas pins it). Acks, routes, deliveries
	// and heartbeats do not wait: what a failover loses of them is found
	// again (DESIGN.md, Failover).
	//
	// Needs a *redis.Client (one server, or Sentinel's failover client)
	// or a *redis.ClusterClient.
	WaitReplicas int

	// WaitTimeout bounds each WAIT. 0 means 500ms.
	WaitTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.InboxMaxLen <= 0 {
		c.InboxMaxLen = 1000
	}
	if c.InboxTTL <= 0 {
		c.InboxTTL = 72 * time.Hour
	}
	if c.DedupeWindow <= 0 {
		c.DedupeWindow = c.InboxMaxLen
	}
	if c.DeliveryMaxLen <= 0 {
		c.DeliveryMaxLen = 100000
	}
	if c.RouteTTL <= 0 {
		c.RouteTTL = 24 * time.Hour
	}
	if c.NodeTTL <= 0 {
		c.NodeTTL = 10 * time.Second
	}
	if c.ScriptBatch <= 0 {
		c.ScriptBatch = 32
	}
	if c.ClaimMinIdle <= 0 {
		c.ClaimMinIdle = 2 * time.Second
	}
	if c.WaitReplicas < 0 {
		c.WaitReplicas = 0
	}
	if c.WaitTimeout <= 0 {
		c.WaitTimeout = 500 * time.Millisecond
	}
	return c
}

// Store keeps device inboxes, routes, node delivery streams and node
// heartbeats in Redis. Beyond its configuration it holds only, per node
// id, the token of its last heartbeat (see Heartbeat). It is safe for
// concurrent use.
type Store struct {
	rdb redis.UniversalClient
	cfg Config

	// batch is devices per Append or AckMany script call: cfg.ScriptBatch
	// on a standalone client, 1 where keys of different devices may live in
	// different slots.
	batch int

	// cluster is rdb as a cluster client, nil otherwise.
	cluster *redis.ClusterClient

	// hbMu guards hbLast, per node id the token of the last heartbeat whose
	// result Heartbeat returned, and hbRuns, on a cluster the run ids of
	// the primaries that heartbeat saw. It is never held across a Redis
	// call.
	hbMu   sync.Mutex
	hbLast map[string]string
	hbRuns map[string]string
}

// New returns a Store using rdb, which the caller creates with
// ContextTimeoutEnabled set (otherwise context deadlines do not bound socket
// I/O) and closes after the Store is no longer used.
func New(rdb redis.UniversalClient, cfg Config) *Store {
	s := &Store{rdb: rdb, cfg: cfg.withDefaults(), batch: 1, hbLast: make(map[string]string),
		hbRuns: make(map[string]string)}
	switch c := rdb.(type) {
	case *redis.Client:
		s.batch = s.cfg.ScriptBatch
	case *redis.ClusterClient:
		s.cluster = c
	}
	return s
}

// Config returns the configuration in use, defaults applied.
func (s *Store) Config() Config { return s.cfg }

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	return wrap("ping", "", s.rdb.Ping(ctx).Err())
}

//go:embed lua/*.lua
var luaFS embed.FS

func loadScript(name string) *redis.Script {
	src, err := luaFS.ReadFile("lua/" + name)
	if err != nil {
		// The files are embedded at build time: a missing one is a build
		// defect, not a runtime condition.
		panic("streams: missing embedded script " + name)
	}
	return redis.NewScript(string(src))
}

var (
	appendScript    = loadScript("append.lua")
	resumeScript    = loadScript("resume.lua")
	readScript      = loadScript("read.lua")
	ackScript       = loadScript("ack.lua")
	claimScript     = loadScript("claim.lua")
	releaseScript   = loadScript("release.lua")
	refreshScript   = loadScript("refresh.lua")
	takeoverScript  = loadScript("takeover.lua")
	retireScript    = loadScript("retire.lua")
	heartbeatScript = loadScript("heartbeat.lua")
)

// scriptCall is one script invocation queued for runScripts.
type scriptCall struct {
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
}

// runScripts sends every call as EVALSHA in one pipeline. Calls refused with
// NOSCRIPT (the script cache is empty after a Redis restart or SCRIPT FLUSH)
// are sent again with EVAL, which also caches the script: a refused call did
// not run, so sending it again cannot apply it twice. It returns the first
// error of any call; each call's own result is in its cmd.
func (s *Store) runScripts(ctx context.Context, calls []scriptCall) error {
	_ = evalPipelined(ctx, s.rdb, calls, 0, 0)
	return firstErr(calls)
}

// evalPipelined runs calls as runScripts describes on rdb, and when
// replicas > 0 ends each pipeline with WAIT replicas timeout. It returns
// the smallest number of replicas a WAIT confirmed, or an error when a
// pipeline did not get as far as its WAIT's answer; the calls' own
// results and errors are in their cmds.
func evalPipelined(ctx context.Context, rdb redis.Cmdable, calls []scriptCall, replicas int, timeout time.Duration) error {
	var short []int64
	run := func(send func(c *scriptCall, pipe redis.Pipeliner) *redis.Cmd, which []int) error {
		pipe := rdb.Pipeline()
		for _, i := range which {
			calls[i].cmd = send(&calls[i], pipe)
		}
		var wait *redis.Cmd
		if replicas > 0 {
			// Last in the pipeline, so on the connection that sent the
			// writes and after them: WAIT counts that connection's writes.
			wait = pipe.Do(ctx, "WAIT", replicas, timeout.Milliseconds())
		}
		_, _ = pipe.Exec(ctx)
		if wait == nil {
			return nil
		}
		n, err := wait.Int64()
		if err != nil {
			return err
		}
		short = append(short, n)
		return nil
	}
	all := make([]int, len(calls))
	for i := range all {
		all[i] = i
	}
	err := run(func(c *scriptCall, pipe redis.Pipeliner) *redis.Cmd {
		return c.script.EvalSha(ctx, pipe, c.keys, c.args...)
	}, all)

	var retry []int
	for i := range calls {
		if redis.HasErrorPrefix(calls[i].cmd.Err(), "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		if rerr := run(func(c *scriptCall, pipe redis.Pipeliner) *redis.Cmd {
			return c.script.Eval(ctx, pipe, c.keys, c.args...)
		}, retry); err == nil {
			err = rerr
		}
	}
	if err != nil {
		return err
	}
	for _, n := range short {
		if n < int64(replicas) {
			return fmt.Errorf("%w: %d of %d replicas confirmed within %v", ErrNotReplicated, n, replicas, timeout)
		}
	}
	return nil
}

// firstErr returns the first error of calls.
func firstErr(calls []scriptCall) error {
	for i := range calls {
		if err := calls[i].cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

// runReplicated runs calls as runScripts does, but on each primary they
// write to as one pipeline ending in WAIT WaitReplicas WaitTimeout
// (concurrently, one pipeline per primary, as a cluster client's pipeline
// would). It returns the first call's error, or ErrNotReplicated when
// every call succeeded but a primary's WAIT confirmed fewer replicas.
func (s *Store) runReplicated(ctx context.Context, calls []scriptCall) error {
	if s.cfg.WaitReplicas == 0 {
		return s.runScripts(ctx, calls)
	}
	groups, err := s.byPrimary(ctx, calls)
	if err != nil {
		return err
	}
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sub := make([]scriptCall, len(g.calls))
			for j, k := range g.calls {
				sub[j] = calls[k]
			}
			errs[i] = evalPipelined(ctx, g.rdb, sub, s.cfg.WaitReplicas, s.cfg.WaitTimeout)
			for j, k := range g.calls {
				calls[k].cmd = sub[j].cmd
			}
		}()
	}
	wg.Wait()
	if err := firstErr(calls); err != nil {
		s.reloadCluster(ctx, err)
		return err
	}
	for _, err := range errs {
		if err != nil {
			s.reloadCluster(ctx, err)
			return err
		}
	}
	return nil
}

// primaryCalls is the calls (indexes) that go to one primary.
type primaryCalls struct {
	rdb   *redis.Client
	calls []int
}

// byPrimary groups calls by the primary that serves their keys: all on the
// one primary of a *redis.Client, by their first key's slot on a cluster.
func (s *Store) byPrimary(ctx context.Context, calls []scriptCall) ([]primaryCalls, error) {
	switch c := s.rdb.(type) {
	case *redis.Client:
		all := make([]int, len(calls))
		for i := range all {
			all[i] = i
		}
		return []primaryCalls{{rdb: c, calls: all}}, nil
	case *redis.ClusterClient:
		var groups []primaryCalls
		at := map[*redis.Client]int{}
		for i := range calls {
			m, err := c.MasterForKey(ctx, calls[i].keys[0])
			if err != nil {
				// No usable cluster state: Redis is unreachable or
				// reconfiguring.
				return nil, fmt.Errorf("%w: find the primary of %s: %w", ErrUnavailable, calls[i].keys[0], err)
			}
			g, ok := at[m]
			if !ok {
				g = len(groups)
				at[m] = g
				groups = append(groups, primaryCalls{rdb: m})
			}
			groups[g].calls = append(groups[g].calls, i)
		}
		return groups, nil
	}
	return nil, fmt.Errorf("WaitReplicas needs a *redis.Client or a *redis.ClusterClient, not %T", s.rdb)
}

// reloadCluster has a cluster client reload its slot map after a call
// that went to a primary directly failed: it may have failed over, or its
// slots moved, and only the cluster client's own commands would have
// told it.
func (s *Store) reloadCluster(ctx context.Context, err error) {
	if s.cluster != nil && unavailable(err) {
		s.cluster.ReloadState(ctx)
	}
}

// wrap names the operation and key in err and marks transport failures with
// ErrUnavailable.
func wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if key != "" {
		op += " " + key
	}
	if unavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// unavailable reports whether err means Redis could not be reached or is not
// serving, as opposed to a refused command.
func unavailable(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, ErrNotReplicated),
		errors.As(err, &ne),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, redis.ErrPoolExhausted):
		return true
	}
	return redis.IsLoadingError(err) ||
		redis.IsReadOnlyError(err) ||
		redis.IsMasterDownError(err) ||
		redis.IsClusterDownError(err) ||
		redis.IsTryAgainError(err) ||
		redis.HasErrorPrefix(err, "BUSY ") || // a script runs too long; not BUSYGROUP
		// min-replicas-to-write: the primary has too few replicas.
		redis.HasErrorPrefix(err, "NOREPLICAS") ||
		// A blocked command (WAIT) ended by a role change (failover).
		redis.HasErrorPrefix(err, "UNBLOCKED") ||
		// A slot moved: a primary reached directly (Append's WAIT path)
		// or a cluster client out of redirects during a failover.
		redis.HasErrorPrefix(err, "MOVED") ||
		redis.HasErrorPrefix(err, "ASK")
}

// validID reports whether id can be embedded in a key's hash tag.
func validID(id string) bool {
	return id != "" && !strings.ContainsAny(id, "{}")
}

func checkIDs(kind string, ids []string) error {
	for _, id := range ids {
		if !validID(id) {
			return fmt.Errorf("%s id %q: %w", kind, id, ErrInvalidArgument)
		}
	}
	return nil
}

// newToken returns 16 random hex characters: inbox epochs and claim tokens
// must never repeat for a device, across processes and restarts.
func newToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	return hex.EncodeToString(b[:])
}
