// Package raftmetatest runs in-process raftmeta clusters for tests: n real
// Stores talking raft over real TCP on 127.0.0.1, each with its own data
// directory under t.TempDir().
//
//	c := raftmetatest.NewCluster(t, 3)
//	_, leader := c.WaitForLeader(t)
//	leader.Apply(ctx, raftmeta.SetDegrade(...))
//	c.WaitConverged(t)
//
// Nodes can be added, killed (closed without leaving) and restarted on
// the same data directory and address. Everything is closed by t.Cleanup. A Cluster
// is safe for concurrent use, but tests normally drive it from one
// goroutine.
package raftmetatest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/raftmeta"
)

// Timings used unless WithDefaultTimings is given: fast enough that an
// election takes well under a second, slow enough that a 2-core machine
// running -race with both cores busy does not start spurious elections
// (at 150 ms, a loaded machine's scheduling delays cost leaders their
// lease in the middle of tests).
const (
	fastHeartbeat = 300 * time.Millisecond
	fastElection  = 300 * time.Millisecond
	fastLease     = 200 * time.Millisecond
	fastCommit    = 10 * time.Millisecond
)

type options struct {
	defaultTimings bool
	logLevel       slog.Level
	configure      func(i int, cfg *raftmeta.Config)
}

// Option changes how NewCluster builds its nodes.
type Option func(*options)

// WithDefaultTimings keeps hashicorp/raft's default timeouts (1 s
// heartbeat and election), for measuring what production sees.
func WithDefaultTimings() Option { return func(o *options) { o.defaultTimings = true } }

// WithLogLevel sets the lowest level of store and raft messages written to
// the test log; the default is warn.
func WithLogLevel(l slog.Level) Option { return func(o *options) { o.logLevel = l } }

// WithConfig lets a test adjust node i's Config (snapshot thresholds,
// segment size) before it is opened; ID, DataDir, RaftBind and Logger are
// already set.
func WithConfig(f func(i int, cfg *raftmeta.Config)) Option {
	return func(o *options) { o.configure = f }
}

// Cluster is a set of in-process nodes.
type Cluster struct {
	mu     sync.Mutex
	nodes  []*node
	log    *testLog
	logger *slog.Logger
	opts   options
}

type node struct {
	cfg    raftmeta.Config
	member raftmeta.Member
	store  *raftmeta.Store // nil while killed
}

// NewCluster starts n nodes: node 0 bootstraps and registers itself, the
// others join through the leader. It returns once every node has the same
// state.
func NewCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	o := options{logLevel: slog.LevelWarn}
	for _, opt := range opts {
		opt(&o)
	}
	tl := &testLog{t: t}
	c := &Cluster{log: tl, opts: o}
	c.logger = slog.New(slog.NewTextHandler(tl, &slog.HandlerOptions{Level: o.logLevel}))
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	// Cleanups run last-registered first: the nodes must stop before
	// their directories are removed.
	t.Cleanup(c.closeAll)
	for i := range n {
		c.open(t, dirs[i])
	}

	first := c.Store(0)
	if err := first.Bootstrap(); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := first.WaitForLeader(ctx); err != nil {
		t.Fatalf("node 0: %v", err)
	}
	for i := range n {
		c.join(t, i)
	}
	c.WaitConverged(t)
	return c
}

// Add starts one more node and joins it through the leader, as pushd
// --join does; it returns the node's index without waiting for the others
// to apply the join.
func (c *Cluster) Add(t testing.TB) int {
	t.Helper()
	i := c.Open(t)
	c.join(t, i)
	return i
}

// Open starts one more node without joining it, for a test that calls
// Join itself, and returns the node's index.
func (c *Cluster) Open(t testing.TB) int {
	t.Helper()
	dir := t.TempDir()
	i := c.open(t, dir)
	// Registered after TempDir's cleanup, so it runs first.
	t.Cleanup(func() { c.Kill(i) })
	return i
}

// open opens the next node on dir and returns its index.
func (c *Cluster) open(t testing.TB, dir string) int {
	t.Helper()
	c.mu.Lock()
	i := len(c.nodes)
	c.mu.Unlock()
	cfg := raftmeta.Config{
		ID:           fmt.Sprintf("node%d", i),
		DataDir:      dir,
		RaftBind:     "127.0.0.1:0",
		Logger:       c.logger,
		RaftLogLevel: c.opts.logLevel,
	}
	if !c.opts.defaultTimings {
		cfg.HeartbeatTimeout = fastHeartbeat
		cfg.ElectionTimeout = fastElection
		cfg.LeaderLeaseTimeout = fastLease
		cfg.CommitTimeout = fastCommit
	}
	if c.opts.configure != nil {
		c.opts.configure(i, &cfg)
	}
	s, err := raftmeta.Open(cfg)
	if err != nil {
		t.Fatalf("open node %d: %v", i, err)
	}
	// Restart reuses the port the first open was given.
	cfg.RaftBind = s.RaftAddr()
	m := raftmeta.Member{
		ID:         cfg.ID,
		RaftAddr:   s.RaftAddr(),
		AdminAddr:  fmt.Sprintf("%s.admin.invalid:9090", cfg.ID),
		DeviceAddr: fmt.Sprintf("%s.device.invalid:8080", cfg.ID),
		TCPAddr:    fmt.Sprintf("%s.tcp.invalid:7070", cfg.ID),
		PushAddr:   fmt.Sprintf("%s.push.invalid:8443", cfg.ID),
		Weight:     100,
	}
	c.mu.Lock()
	c.nodes = append(c.nodes, &node{cfg: cfg, member: m, store: s})
	c.mu.Unlock()
	return i
}

// join joins node i through whichever node leads.
func (c *Cluster) join(t testing.TB, i int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := c.Member(i)
	WaitFor(t, 30*time.Second, func() error {
		_, leader := c.Leader()
		if leader == nil {
			return errors.New("no leader")
		}
		return leader.Join(ctx, m, raftmeta.Caller{})
	})
}

// Len returns the number of nodes, killed ones included.
func (c *Cluster) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.nodes)
}

// Store returns node i's Store, or nil while it is killed.
func (c *Cluster) Store(i int) *raftmeta.Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].store
}

// Member returns the Member record node i joined with.
func (c *Cluster) Member(i int) raftmeta.Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].member
}

// Config returns the Config node i is opened with.
func (c *Cluster) Config(i int) raftmeta.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].cfg
}

// live returns the running nodes' indexes and stores.
func (c *Cluster) live() ([]int, []*raftmeta.Store) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var idx []int
	var stores []*raftmeta.Store
	for i, n := range c.nodes {
		if n.store != nil {
			idx = append(idx, i)
			stores = append(stores, n.store)
		}
	}
	return idx, stores
}

// Leader returns the running node that considers itself leader, or -1 and
// nil.
func (c *Cluster) Leader() (int, *raftmeta.Store) {
	idx, stores := c.live()
	for k, s := range stores {
		if s.IsLeader() {
			return idx[k], s
		}
	}
	return -1, nil
}

// WaitForLeader waits until exactly one running node is leader and every
// running node knows it.
func (c *Cluster) WaitForLeader(t testing.TB) (int, *raftmeta.Store) {
	t.Helper()
	var li int
	var ls *raftmeta.Store
	WaitFor(t, 30*time.Second, func() error {
		idx, stores := c.live()
		li, ls = -1, nil
		for k, s := range stores {
			if s.IsLeader() {
				if ls != nil {
					return fmt.Errorf("nodes %d and %d both lead", li, idx[k])
				}
				li, ls = idx[k], s
			}
		}
		if ls == nil {
			return errors.New("no leader")
		}
		want := c.Member(li).ID
		for k, s := range stores {
			if id, _ := s.Leader(); id != want {
				return fmt.Errorf("node %d sees leader %q, want %q", idx[k], id, want)
			}
		}
		return nil
	})
	return li, ls
}

// Join adds node i to the cluster through whichever node leads, trying
// again while leadership moves (an election under load, with the fast
// timings), as pushd's own join does; other errors are returned at once.
func (c *Cluster) Join(ctx context.Context, i int, by raftmeta.Caller) error {
	return c.JoinMember(ctx, c.Member(i), by)
}

// JoinMember is Join for a member that is not one of the cluster's nodes
// (a node that comes back from another host, an imposter).
func (c *Cluster) JoinMember(ctx context.Context, m raftmeta.Member, by raftmeta.Caller) error {
	for {
		var err error
		if _, leader := c.Leader(); leader == nil {
			err = raftmeta.ErrNotLeader
		} else if err = leader.Join(ctx, m, by); !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Apply applies cmd on whichever node leads, retrying with the same
// request id while leadership moves, so a command is applied at most once.
// FSM errors (ErrNotFound, ErrConflict, ErrInvalid) are returned at once.
func (c *Cluster) Apply(ctx context.Context, cmd raftmeta.Command) (raftmeta.Result, error) {
	if cmd.RequestID == "" {
		cmd.RequestID = raftmeta.NewRequestID()
	}
	if cmd.Time.IsZero() {
		// One time for every attempt, as a forwarding client would send.
		cmd.Time = time.Now().UTC()
	}
	for {
		var err error
		if _, leader := c.Leader(); leader == nil {
			err = raftmeta.ErrNotLeader
		} else {
			var res raftmeta.Result
			res, err = leader.Apply(ctx, cmd)
			if !retryable(err) {
				return res, err
			}
		}
		select {
		case <-ctx.Done():
			return raftmeta.Result{}, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func retryable(err error) bool {
	return errors.Is(err, raftmeta.ErrNotLeader) || errors.Is(err, raftmeta.ErrLeadershipLost) ||
		errors.Is(err, raftmeta.ErrTimeout) || errors.Is(err, raftmeta.ErrClosed)
}

// Kill closes node i abruptly: it does not leave, the others see it go
// silent.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	s := c.nodes[i].store
	c.nodes[i].store = nil
	c.mu.Unlock()
	if s != nil {
		if err := s.Close(); err != nil {
			c.log.logf("kill node %d: %v", i, err)
		}
	}
}

// Restart reopens a killed node on its data directory and raft address.
func (c *Cluster) Restart(t testing.TB, i int) *raftmeta.Store {
	t.Helper()
	c.mu.Lock()
	n := c.nodes[i]
	c.mu.Unlock()
	if n.store != nil {
		t.Fatalf("restart node %d: still running", i)
	}
	var s *raftmeta.Store
	// The port was free a moment ago; retry briefly in case the kernel
	// has not released it yet.
	WaitFor(t, 5*time.Second, func() error {
		var err error
		s, err = raftmeta.Open(n.cfg)
		return err
	})
	c.mu.Lock()
	n.store = s
	c.mu.Unlock()
	return s
}

// WaitConverged waits until every running node has applied the same log
// index and holds an equal State and FSM digest.
func (c *Cluster) WaitConverged(t testing.TB) {
	t.Helper()
	WaitFor(t, 30*time.Second, func() error {
		idx, stores := c.live()
		if len(stores) == 0 {
			return nil
		}
		ref := stores[0]
		refStats, refState, refDigest := ref.Stats(), ref.State(), ref.Digest()
		for k, s := range stores[1:] {
			i := idx[k+1]
			if st := s.Stats(); st.AppliedIndex != refStats.AppliedIndex {
				return fmt.Errorf("node %d applied %d, node %d applied %d", i, st.AppliedIndex, idx[0], refStats.AppliedIndex)
			}
			if !reflect.DeepEqual(s.State(), refState) {
				return fmt.Errorf("node %d state (index %d) differs from node %d's (index %d)", i, s.State().Index, idx[0], refState.Index)
			}
			if d := s.Digest(); d != refDigest {
				return fmt.Errorf("node %d digest %s, node %d %s", i, d, idx[0], refDigest)
			}
		}
		return nil
	})
}

func (c *Cluster) closeAll() {
	c.mu.Lock()
	n := len(c.nodes)
	c.mu.Unlock()
	for i := range n {
		c.Kill(i)
	}
	// Raft's goroutines have stopped; nothing may write to the test log
	// once the test is over.
	c.log.stop()
}

// WaitFor calls f until it returns nil, failing the test with f's last
// error after timeout.
func WaitFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testLog writes log lines to the test log until stop; testing panics on
// a Log call after the test has finished.
type testLog struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) logf(format string, args ...any) {
	_, _ = fmt.Fprintf(l, format, args...)
}

func (l *testLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
}
