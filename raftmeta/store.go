package raftmeta

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

const (
	// maxVoters is the largest voter set Join and Remove build; further
	// nodes are non-voters, which replicate but do not slow commits or
	// elections. See voterTarget.
	maxVoters = 5
	// reconcileTimeout bounds one background pass of reconcile, and
	// reconcileRetry is how long after a failed pass the next one starts.
	reconcileTimeout = 30 * time.Second
	reconcileRetry   = 5 * time.Second
	// defaultEnqueueTimeout bounds how long a command waits to be accepted
	// by raft when the caller's context has no deadline.
	defaultEnqueueTimeout = 10 * time.Second
	// transportPool and transportTimeout are the TCP transport's idle
	// connection pool per peer and its dial/IO deadline.
	transportPool    = 3
	transportTimeout = 10 * time.Second
	// retainSnapshots is how many snapshots stay on disk: the newest and
	// one fallback in case the newest turns out unreadable.
	retainSnapshots = 2
)

// Config configures a Store. Every zero value has the meaning given.
type Config struct {
	// ID is this node's raft server id and Member.ID (required; letters,
	// digits, '.', '_', '-').
	ID string
	// DataDir holds the raft log and stable store (DataDir/raft, raft-wal)
	// and snapshots (DataDir/snapshots). Created if missing. Required.
	DataDir string
	// RaftBind is the TCP address the raft transport listens on (required).
	// "127.0.0.1:0" picks a free port; RaftAddr reports the bound address.
	RaftBind string
	// RaftAdvertise is the address peers dial; "" → the bound address.
	// Required when RaftBind is a wildcard address such as 0.0.0.0.
	RaftAdvertise string
	// Logger receives the store's and raft's messages, with a "component"
	// attribute; nil discards them.
	Logger *slog.Logger
	// RaftLogLevel is the lowest level of raft's own messages passed to
	// Logger; zero → info (elections, membership, snapshots), not raft's
	// per-RPC debug chatter.
	RaftLogLevel slog.Level

	// Raft timings; zero → hashicorp/raft defaults (1 s heartbeat and
	// election timeouts, 500 ms leader lease, 50 ms commit timeout).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration

	// Snapshotting; zero → raft defaults (a snapshot every 8192 entries,
	// checked every 120 s, keeping 10240 entries after it).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64

	// SegmentSize is the raft-wal segment file size in bytes; zero → the
	// raft-wal default (64 MiB). Compaction frees whole segments only.
	SegmentSize int

	// TLS, when set, runs the raft port over mutual TLS: raft's RPCs and
	// the read index alike. Nil → plain TCP (pushd --dev, and pushd's
	// explicit plaintext opt-out).
	TLS *TLS
}

// TLS is how the raft port speaks mutual TLS. regiontls.Node provides
// both halves for a region's nodes.
type TLS struct {
	// Server configures the listener. It must require and verify a
	// client certificate: a peer without one fails the handshake, which
	// comes before anything on the connection reaches raft.
	Server *tls.Config
	// Client returns the configuration for dialing the peer at addr
	// (host:port). It is called for every connection, so a certificate
	// replaced in between is presented from the next connection on.
	Client func(addr string) *tls.Config
}

func (c Config) validate() (advertise net.Addr, err error) {
	if err := checkName("node id", c.ID); err != nil {
		return nil, err
	}
	if c.DataDir == "" {
		return nil, fmt.Errorf("data dir: empty: %w", ErrInvalid)
	}
	if c.SegmentSize < 0 {
		return nil, fmt.Errorf("segment size %d: %w", c.SegmentSize, ErrInvalid)
	}
	if c.TLS != nil && (c.TLS.Server == nil || c.TLS.Client == nil) {
		return nil, fmt.Errorf("TLS needs both a server and a client configuration: %w", ErrInvalid)
	}
	host, _, err := net.SplitHostPort(c.RaftBind)
	if err != nil {
		return nil, fmt.Errorf("raft bind %q: %v: %w", c.RaftBind, err, ErrInvalid)
	}
	if c.RaftAdvertise == "" {
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			return nil, fmt.Errorf("raft bind %q is a wildcard address and no advertise address is set: %w", c.RaftBind, ErrInvalid)
		}
		return nil, nil
	}
	adv, err := net.ResolveTCPAddr("tcp", c.RaftAdvertise)
	if err != nil {
		return nil, fmt.Errorf("raft advertise %q: %v: %w", c.RaftAdvertise, err, ErrInvalid)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() || adv.Port == 0 {
		return nil, fmt.Errorf("raft advertise %q is not dialable: %w", c.RaftAdvertise, ErrInvalid)
	}
	return adv, nil
}

// hclogFloor maps the configured slog level to hclog's.
func hclogFloor(l slog.Level) hclog.Level {
	switch {
	case l < slog.LevelDebug:
		return hclog.Trace
	case l < slog.LevelInfo:
		return hclog.Debug
	case l < slog.LevelWarn:
		return hclog.Info
	case l < slog.LevelError:
		return hclog.Warn
	}
	return hclog.Error
}

// Store is one node's replica of the region metadata. It owns the
// *raft.Raft, its log store, snapshot store and transport.
type Store struct {
	id    string
	log   *slog.Logger
	raft  *raft.Raft
	fsm   *fsm
	wal   *wal.WAL
	trans *raft.NetworkTransport
	mux   *muxLayer // the transport's stream layer, shared with the read index

	syncs *syncRounds // read indexes for Sync

	observer *raft.Observer
	obsCh    chan raft.Observation

	changes *notifier // state changes and leader changes
	leaders *notifier // leader changes only (WaitForLeader)

	// mu guards closed, failing, resumed, recheck and leaderTerms.
	mu     sync.Mutex
	closed bool
	// failing holds, on the leader, the time of the last failed heartbeat
	// to each peer that has not answered one since (see unreachable).
	failing map[raft.ServerID]time.Time
	// resumed holds, on the leader, the peers whose heartbeats came back
	// (or never failed in its leadership, see sweepAnswering) and that
	// reconcile has not yet dealt with: the only peers it may promote. A
	// leader change clears it.
	resumed map[raft.ServerID]struct{}
	// recheck is set when this node becomes the leader: the next
	// reconcile checks the member records even if no peer resumed.
	recheck bool
	// leaderTerms counts leader changes, so that a check scheduled in one
	// leadership (sweepAnswering) can tell it has ended.
	leaderTerms uint64
	// barrierTerm is the term in which this node, as leader, last had a
	// barrier applied: from then on its applied index covers every entry
	// committed before its term (leaderReadIndex).
	barrierTerm uint64
	// failureMemory is how long a failed heartbeat keeps a peer
	// unreachable without a newer failure.
	failureMemory time.Duration

	// members is a one-slot lock that serializes the leader's membership
	// changes (Join, Remove, reconcile; see beginChange). Each decides on
	// the latest configuration and then records every member's suffrage;
	// interleaved, one could record a suffrage the other had just
	// changed. A channel rather than a mutex, so that a caller queued
	// behind a slow change gives up when its context ends.
	members chan struct{}
	// reconcileKick wakes reconcileLoop (capacity 1: kicks coalesce).
	reconcileKick chan struct{}

	stop chan struct{}  // closed by Close to end observe and reconcileLoop
	wg   sync.WaitGroup // observe, reconcileLoop
}

// Open starts a node from cfg.DataDir: it restores the latest snapshot,
// opens the log and starts the raft transport. A node with no raft state
// stays a lonely follower until Bootstrap or until a leader adds it (Join).
func Open(cfg Config) (*Store, error) {
	advertise, err := cfg.validate()
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "raftmeta", "node", cfg.ID)
	floor := hclogFloor(cfg.RaftLogLevel)

	raftDir := filepath.Join(cfg.DataDir, "raft")
	// raft-wal's Open does not create its directory.
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}

	s := &Store{
		id:      cfg.ID,
		log:     logger,
		changes: newNotifier(),
		leaders: newNotifier(),
		obsCh:   make(chan raft.Observation, 64),
		failing: map[raft.ServerID]time.Time{},
		resumed: map[raft.ServerID]struct{}{},
		stop:    make(chan struct{}),

		members:       make(chan struct{}, 1),
		reconcileKick: make(chan struct{}, 1),
	}
	s.fsm = newFSM(s.changes.notify)

	segmentSize := cfg.SegmentSize
	if segmentSize == 0 {
		segmentSize = wal.DefaultSegmentSize
	}
	s.wal, err = wal.Open(raftDir, wal.WithLogger(newHCLogger(logger, "wal", floor)), wal.WithSegmentSize(segmentSize))
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", raftDir, err)
	}
	// The file snapshot store keeps its files under DataDir/snapshots.
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, retainSnapshots, newHCLogger(logger, "snapshot", floor))
	if err != nil {
		_ = s.wal.Close()
		return nil, fmt.Errorf("open snapshots: %w", err)
	}
	s.mux, err = newMuxLayer(cfg.RaftBind, advertise, cfg.TLS, logger)
	if err != nil {
		_ = s.wal.Close()
		return nil, fmt.Errorf("listen raft %s: %w", cfg.RaftBind, err)
	}
	s.mux.start(s.serveReadIndex)
	s.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  s.mux,
		MaxPool: transportPool,
		Timeout: transportTimeout,
		Logger:  newHCLogger(logger, "transport", floor),
	})
	s.syncs = &syncRounds{ask: s.askReadIndex}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	// DefaultConfig logs at DEBUG to stderr; raft gets the slog adapter.
	rc.Logger = newHCLogger(logger, "raft", floor)
	rc.NoLegacyTelemetry = true
	setDuration(&rc.HeartbeatTimeout, cfg.HeartbeatTimeout)
	setDuration(&rc.ElectionTimeout, cfg.ElectionTimeout)
	setDuration(&rc.LeaderLeaseTimeout, cfg.LeaderLeaseTimeout)
	setDuration(&rc.CommitTimeout, cfg.CommitTimeout)
	setDuration(&rc.SnapshotInterval, cfg.SnapshotInterval)
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if err := raft.ValidateConfig(rc); err != nil {
		_ = s.trans.Close()
		_ = s.wal.Close()
		return nil, fmt.Errorf("open: raft config: %v: %w", err, ErrInvalid)
	}

	// Raft retries a peer that fails heartbeats at most HeartbeatTimeout/2
	// apart, and one attempt to a silent host takes up to the transport
	// timeout: a peer that fails keeps producing failures well within
	// twice their sum.
	s.failureMemory = 2 * (rc.HeartbeatTimeout + transportTimeout)

	s.raft, err = raft.NewRaft(rc, s.fsm, s.wal, s.wal, snaps, s.trans)
	if err != nil {
		_ = s.trans.Close()
		_ = s.wal.Close()
		return nil, fmt.Errorf("open raft: %w", err)
	}
	// LeaderCh is lossy and single-consumer; an observer filtered to
	// leader changes feeds WaitForLeader and Changes instead. The same
	// observer follows the leader's heartbeats, for unreachable.
	s.observer = raft.NewObserver(s.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	s.raft.RegisterObserver(s.observer)
	s.wg.Add(2)
	go s.observe()
	go s.reconcileLoop()
	logger.Info("raft store open", "raft_addr", s.RaftAddr(), "data_dir", cfg.DataDir, "tls", cfg.TLS != nil)
	return s, nil
}

func setDuration(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}

// observe relays leader changes and the leader's heartbeat failures
// until Close.
func (s *Store) observe() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case o := <-s.obsCh:
			switch d := o.Data.(type) {
			case raft.LeaderObservation:
				s.log.Info("leader changed", "leader", string(d.LeaderID), "leader_addr", string(d.LeaderAddr))
				// A new leader starts its own heartbeats.
				s.mu.Lock()
				clear(s.failing)
				clear(s.resumed)
				s.recheck = string(d.LeaderID) == s.id
				s.leaderTerms++
				term := s.leaderTerms
				s.mu.Unlock()
				s.leaders.notify()
				s.changes.notify()
				if string(d.LeaderID) == s.id {
					s.kickReconcile()
					time.AfterFunc(s.failureMemory/2, func() { s.sweepAnswering(term) })
				}
			case raft.FailedHeartbeatObservation:
				s.mu.Lock()
				s.failing[d.PeerID] = time.Now()
				s.mu.Unlock()
			case raft.ResumedHeartbeatObservation:
				s.mu.Lock()
				delete(s.failing, d.PeerID)
				s.resumed[d.PeerID] = struct{}{}
				s.mu.Unlock()
				s.kickReconcile()
			}
		}
	}
}

// sweepAnswering, half failureMemory into a leadership (by when a dead
// peer has failed a heartbeat at least once), counts every non-voter
// whose heartbeats have not failed in it as resumed and runs reconcile.
// A peer's heartbeats resume (ResumedHeartbeatObservation) only on the
// leader they failed to: a non-voter that came back under one leader,
// which lost the leadership before promoting it, answers the next one
// from its first heartbeat, and would otherwise stay a non-voter.
func (s *Store) sweepAnswering(term uint64) {
	cf := s.raft.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	s.mu.Lock()
	if s.closed || s.leaderTerms != term {
		s.mu.Unlock()
		return
	}
	found := false
	for _, srv := range cf.Configuration().Servers {
		if _, failing := s.failing[srv.ID]; srv.Suffrage != raft.Voter && srv.ID != raft.ServerID(s.id) && !failing {
			s.resumed[srv.ID] = struct{}{}
			found = true
		}
	}
	s.mu.Unlock()
	if found {
		s.kickReconcile()
	}
}

// unreachable reports whether the leader's heartbeats to the peer are
// failing: one failed and none succeeded since, within failureMemory (an
// observation raft dropped on a full channel then ages out instead of
// marking the peer for good). A peer this node has not heartbeated yet,
// as right after it became leader, counts as reachable.
func (s *Store) unreachable(id raft.ServerID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.failing[id]
	return ok && time.Since(t) < s.failureMemory
}

// reachable reports whether a peer may be counted on: its heartbeats are
// not failing (see unreachable).
func (s *Store) reachable(id raft.ServerID) bool { return !s.unreachable(id) }

func (s *Store) forget(id raft.ServerID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.failing, id)
}

// Close stops raft, closes the transport and the log, and ends the
// Changes channels. It does not leave the cluster (see Leave). Safe to
// call more than once.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	// Shutdown waits for raft's goroutines and closes the transport,
	// unless raft shut itself down before (ShutdownOnRemove), which left
	// the transport open: close it here, closing is idempotent. Its
	// stream layer then finishes the connections it was sorting.
	err := s.raft.Shutdown().Error()
	_ = s.trans.Close()
	s.mux.wait()
	s.raft.DeregisterObserver(s.observer)
	close(s.stop)
	s.syncs.close()
	s.wg.Wait()
	if werr := s.wal.Close(); werr != nil && err == nil {
		err = werr
	}
	s.changes.close()
	s.leaders.close()
	if err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Bootstrap makes this node a single-voter cluster if it has no raft state
// yet; on a node with state it does nothing, so it is safe on every start
// of the designated first node. Once leader, that node registers its own
// Member record by calling Join with itself.
func (s *Store) Bootstrap() error {
	if s.isClosed() {
		return fmt.Errorf("bootstrap: %w", ErrClosed)
	}
	f := s.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
		Suffrage: raft.Voter, ID: raft.ServerID(s.id), Address: s.trans.LocalAddr(),
	}}})
	if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrap: %w", s.translate(err))
	}
	return nil
}

// Apply proposes cmd and returns its result once this node has applied it.
// Empty RequestID, Actor and Time are filled in (a new id, "node/<ID>",
// now). Only the leader proposes: elsewhere Apply returns a
// *NotLeaderError (ErrNotLeader) and the caller forwards the command.
// A command the FSM refuses returns its ErrNotFound, ErrConflict or
// ErrInvalid. ErrLeadershipLost means the outcome is unknown: retry with
// the same RequestID.
//
// ctx bounds the wait for raft to accept the command (10 s without a
// deadline). After that Apply waits for the commit, which raft bounds: it
// fails in-flight commands with ErrLeadershipLost when the leader loses
// its quorum for LeaderLeaseTimeout.
func (s *Store) Apply(ctx context.Context, cmd Command) (Result, error) {
	op := "apply " + cmd.Type.String()
	if s.isClosed() {
		return Result{}, fmt.Errorf("%s: %w", op, ErrClosed)
	}
	if cmd.RequestID == "" {
		cmd.RequestID = NewRequestID()
	}
	if cmd.Actor == "" {
		cmd.Actor = "node/" + s.id
	}
	if cmd.Time.IsZero() {
		cmd.Time = time.Now()
	}
	cmd.Time = cmd.Time.UTC()
	if err := cmd.check(); err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	data, err := cmd.encode()
	if err != nil {
		return Result{}, fmt.Errorf("%s: %v: %w", op, err, ErrInvalid)
	}
	if s.raft.State() != raft.Leader {
		return Result{}, fmt.Errorf("%s: %w", op, s.notLeader())
	}
	timeout, err := enqueueTimeout(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, err)
	}
	f := s.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		return Result{}, fmt.Errorf("%s: %w", op, s.translate(err))
	}
	resp, ok := f.Response().(*applyResponse)
	if !ok {
		return Result{}, fmt.Errorf("%s: unexpected FSM response %T", op, f.Response())
	}
	if resp.Err != nil {
		return resp.Result, fmt.Errorf("%s: %w", op, resp.Err)
	}
	return resp.Result, nil
}

// enqueueTimeout turns the context's deadline into raft's enqueue timeout.
func enqueueTimeout(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return defaultEnqueueTimeout, nil
	}
	d := time.Until(dl)
	if d <= 0 {
		return 0, context.DeadlineExceeded
	}
	return d, nil
}

// translate maps raft's errors to the package's sentinels.
func (s *Store) translate(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return s.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return ErrLeadershipLost
	case errors.Is(err, raft.ErrAbortedByRestore), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", ErrLeadershipLost, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return ErrTimeout
	}
	return err
}

// notLeader builds the *NotLeaderError for this moment.
func (s *Store) notLeader() error {
	addr, id := s.raft.LeaderWithID()
	e := &NotLeaderError{LeaderID: string(id), LeaderRaftAddr: string(addr)}
	if id != "" {
		e.Leader, e.Known = s.State().Members[string(id)]
	}
	return e
}

func (s *Store) leaderOnly() error {
	if s.isClosed() {
		return ErrClosed
	}
	if s.raft.State() != raft.Leader {
		return s.notLeader()
	}
	return nil
}

// Caller says who asks for a membership change and under which request
// id. Join, Remove and Leave apply their commands with them, so the audit
// names the asker and a retry is recognized. The zero value stands for
// this node ("node/<ID>", as Apply fills in) with fresh request ids.
type Caller struct {
	// RequestID goes on the command that records the change: the member
	// upsert of Join, the member removal of Remove and Leave. A retry with
	// the same id is answered like the first attempt, where a fresh id
	// would find the member already gone (ErrNotFound). The other commands
	// a change may need (records of promoted or replaced members) get
	// fresh ids.
	RequestID string
	// Actor is recorded in the audit entry of every command the change
	// applies: the admin token id for a change made through the admin API.
	Actor string
}

// recording returns cmd as the command that records the change.
func (c Caller) recording(cmd Command) Command {
	cmd.RequestID, cmd.Actor = c.RequestID, c.Actor
	return cmd
}

// aside returns cmd as a secondary command of the change.
func (c Caller) aside(cmd Command) Command {
	cmd.Actor = c.Actor
	return cmd
}

// voterTarget is how many voters a configuration of n reachable servers
// should have: the largest odd number not above n and maxVoters, so 1, 3
// or 5. An even count adds no fault tolerance over the odd number below it
// (4 voters survive one loss, as 3 do) while every commit waits for one
// more node, so the second, fourth and sixth nodes are non-voters.
func voterTarget(n int) int {
	n = min(n, maxVoters)
	if n%2 == 0 {
		n--
	}
	return max(n, 1)
}

// Join adds a node to the cluster and records m in the state. A new node
// joins as a non-voter; then reachable non-voters are promoted until the
// voters reach the odd target of voterTarget (fillVoters), so the voter
// set grows 1, 3, 5 and later nodes stay non-voters. m.Voter is set to the
// node's resulting suffrage. Join is idempotent for the same ID and
// RaftAddr, and a repeat join also promotes a non-voter that is due. A
// node that comes back with a new address, or a new ID at an old address,
// replaces the old entry. The leader registers itself the same way after
// Bootstrap. An existing record's Draining is kept (the FSM's upsert
// does that): draining is operator state, not the joining node's. by
// names the caller (see Caller).
func (s *Store) Join(ctx context.Context, m Member, by Caller) error {
	op := "join " + m.ID
	if err := s.leaderOnly(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := (&memberUpsertBody{Member: m}).validate(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	done, err := s.beginChange(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer done()
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("%s: %w", op, s.translate(err))
	}
	existing := false
	var stale []raft.Server
	for _, srv := range cf.Configuration().Servers {
		sameID, sameAddr := string(srv.ID) == m.ID, string(srv.Address) == m.RaftAddr
		switch {
		case sameID && sameAddr:
			existing = true
		case sameID || sameAddr:
			if string(srv.ID) == s.id {
				return fmt.Errorf("%s at %s: would replace the leader %s at %s: %w", op, m.RaftAddr, srv.ID, srv.Address, ErrConflict)
			}
			stale = append(stale, srv)
		}
	}
	for _, srv := range stale {
		s.log.Info("join replaces server", "id", string(srv.ID), "addr", string(srv.Address), "by", m.ID, "addr_new", m.RaftAddr)
		if err := s.configChange(ctx, func(t time.Duration) raft.IndexFuture {
			return s.raft.RemoveServer(srv.ID, 0, t)
		}); err != nil {
			return fmt.Errorf("%s: remove stale server %s: %w", op, srv.ID, err)
		}
		s.forget(srv.ID)
	}
	// A member record of another id at this raft address is a previous
	// incarnation of the joining host; it would make the upsert conflict.
	for id, o := range s.State().Members {
		if id != m.ID && o.RaftAddr == m.RaftAddr {
			if _, err := s.Apply(ctx, by.aside(RemoveMember(id))); err != nil && !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%s: %w", op, err)
			}
		}
	}

	if !existing {
		id, addr := raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr)
		if err := s.configChange(ctx, func(t time.Duration) raft.IndexFuture {
			return s.raft.AddNonvoter(id, addr, 0, t)
		}); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		s.log.Info("server added", "id", m.ID, "addr", m.RaftAddr)
	}
	if err := s.fillVoters(ctx, by, "", m.ID, s.reachable); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	voter, err := s.isVoter(m.ID)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	m.Voter = voter
	if _, err := s.Apply(ctx, by.recording(UpsertMember(m))); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// isVoter reports whether id is a voter in the latest configuration.
func (s *Store) isVoter(id string) (bool, error) {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return false, s.translate(err)
	}
	for _, srv := range cf.Configuration().Servers {
		if string(srv.ID) == id {
			return srv.Suffrage == raft.Voter, nil
		}
	}
	return false, nil
}

// fillVoters promotes non-voters for which may holds, one configuration
// change at a time, until the voters reach voterTarget of the reachable
// servers (the leader and every peer unreachable does not report), and
// then records every member's suffrage (recordSuffrage). leaving, unless
// empty, is counted as gone already: the leader promotes before removing
// itself, since it cannot once its removal commits. last is promoted
// after the other candidates: a node added a moment ago has the least of
// the log; its record is left to the caller, Join, which writes it next.
// fillVoters never demotes: a voter dropped to make the count odd would
// be one replica fewer acknowledging writes, so an even count left by a
// removal stays until the next join fills it up.
//
// The caller is inside beginChange, so the configuration a promotion is
// decided on is the latest; should leadership change before the
// promotion commits, raft's prevIndex makes the new leader's
// configuration refuse it rather than take it on top.
func (s *Store) fillVoters(ctx context.Context, by Caller, leaving, last string, may func(raft.ServerID) bool) error {
	for {
		cf := s.raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			return s.translate(err)
		}
		voters, reachable := 0, 0
		var candidates []raft.Server
		for _, srv := range cf.Configuration().Servers {
			if string(srv.ID) == leaving {
				continue
			}
			if string(srv.ID) == s.id || s.reachable(srv.ID) {
				reachable++
			}
			switch {
			case srv.Suffrage == raft.Voter:
				voters++
			case may(srv.ID):
				candidates = append(candidates, srv)
			}
		}
		if voters >= voterTarget(reachable) || len(candidates) == 0 {
			return s.recordSuffrage(ctx, by, last)
		}
		slices.SortFunc(candidates, func(a, b raft.Server) int {
			if al, bl := string(a.ID) == last, string(b.ID) == last; al != bl {
				if al {
					return 1
				}
				return -1
			}
			return strings.Compare(string(a.ID), string(b.ID))
		})
		c := candidates[0]
		if err := s.configChange(ctx, func(t time.Duration) raft.IndexFuture {
			return s.raft.AddVoter(c.ID, c.Address, cf.Index(), t)
		}); err != nil {
			return fmt.Errorf("promote %s: %w", c.ID, err)
		}
		s.log.Info("server promoted to voter", "id", string(c.ID), "voters", voters+1)
	}
}

// recordSuffrage corrects, with member.voter, the records whose Voter
// differs from the latest raft configuration: the members fillVoters
// promoted, and any a leader that died in the middle of a change left
// behind. skip's record is left alone. The caller is inside beginChange.
func (s *Store) recordSuffrage(ctx context.Context, by Caller, skip string) error {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return s.translate(err)
	}
	members := s.State().Members
	for _, srv := range cf.Configuration().Servers {
		rec, ok := members[string(srv.ID)]
		if voter := srv.Suffrage == raft.Voter; ok && rec.ID != skip && rec.Voter != voter {
			if _, err := s.Apply(ctx, by.aside(SetMemberVoter(rec.ID, voter))); err != nil {
				return fmt.Errorf("record %s as voter=%v: %w", srv.ID, voter, err)
			}
		}
	}
	return nil
}

// beginChange takes the membership lock (see members), then waits until
// this leader has applied every entry committed before: a new leader may
// not have applied its predecessors' last entries yet, and a change
// decided on the records before them would write stale ones. The caller
// runs done when the change is over.
func (s *Store) beginChange(ctx context.Context) (done func(), err error) {
	select {
	case s.members <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	done = func() { <-s.members }
	timeout, err := enqueueTimeout(ctx)
	if err == nil {
		err = s.raft.Barrier(timeout).Error()
	}
	if err != nil {
		done()
		return nil, s.translate(err)
	}
	return done, nil
}

// kickReconcile asks reconcileLoop for a pass without waiting for it.
func (s *Store) kickReconcile() {
	select {
	case s.reconcileKick <- struct{}{}:
	default:
	}
}

// reconcileLoop runs reconcile when this node becomes the leader and when
// a peer's heartbeats resume, until Close. Join and Remove promote only
// the peers reachable at that moment: a node whose heartbeats failed
// during its join (a host still booting, a short partition) is promoted
// here once it answers, with no second join. A pass that fails for any
// reason but a lost leadership is tried again after reconcileRetry.
func (s *Store) reconcileLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-s.reconcileKick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), reconcileTimeout)
		err := s.reconcile(ctx)
		cancel()
		var nl *NotLeaderError
		if err != nil && !errors.As(err, &nl) && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrLeadershipLost) {
			s.log.Warn("membership reconcile failed; retrying", "err", err, "in", reconcileRetry)
			time.AfterFunc(reconcileRetry, s.kickReconcile)
		}
	}
}

// reconcile, on the leader, promotes the peers whose heartbeats resumed
// while the voters are below target, and corrects the Voter field of
// member records a previous leader left out of step with raft. It
// promotes no other peer: a new leader has not yet seen which peers
// fail, and a dead node made a voter can cost the quorum, where a live
// one never does. A pass that fails keeps what it had to do for the
// next one.
func (s *Store) reconcile(ctx context.Context) error {
	if err := s.leaderOnly(); err != nil {
		return err
	}
	s.mu.Lock()
	recheck, handled := s.recheck, slices.Collect(maps.Keys(s.resumed))
	s.recheck = false
	s.mu.Unlock()
	err := s.reconcileWith(ctx, recheck, handled)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.recheck = s.recheck || recheck
		return err
	}
	for _, id := range handled {
		delete(s.resumed, id)
	}
	return nil
}

// reconcileWith is one reconcile pass: promotion among the resumed peers,
// then the records; with neither a resumed non-voter nor recheck there is
// nothing to do.
func (s *Store) reconcileWith(ctx context.Context, recheck bool, resumed []raft.ServerID) error {
	if !recheck {
		// Only a non-voter can be promoted. Heartbeats resuming to a
		// voter need no pass, which would cost a Barrier in the log.
		cf := s.raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			return s.translate(err)
		}
		if !slices.ContainsFunc(cf.Configuration().Servers, func(srv raft.Server) bool {
			return srv.Suffrage != raft.Voter && slices.Contains(resumed, srv.ID)
		}) {
			return nil
		}
	}
	done, err := s.beginChange(ctx)
	if err != nil {
		return err
	}
	defer done()
	// The set is read live: a leader change in the meantime emptied it,
	// and a peer the new term has not heartbeated is not promoted.
	return s.fillVoters(ctx, Caller{}, "", "", func(id raft.ServerID) bool {
		s.mu.Lock()
		_, ok := s.resumed[id]
		s.mu.Unlock()
		return ok && s.reachable(id)
	})
}

// configChange runs one raft membership change and waits for it.
func (s *Store) configChange(ctx context.Context, change func(time.Duration) raft.IndexFuture) error {
	timeout, err := enqueueTimeout(ctx)
	if err != nil {
		return err
	}
	if err := change(timeout).Error(); err != nil {
		return s.translate(err)
	}
	return nil
}

// Remove takes a node out of the cluster for good (typically a dead one):
// it deletes the Member record, then the raft server, then promotes
// reachable non-voters while the voters are below target (fillVoters).
// Removing the leader itself, which is what Leave does, promotes first:
// the leader stops being leader as soon as its removal commits. Leader
// only. by.RequestID goes on the record's removal, so a retry with the
// same id (after a lost answer, ErrLeadershipLost, or on the next leader
// after this one left) finishes whatever is left and returns nil.
// Otherwise a remove of an id in neither the state nor raft returns
// ErrNotFound.
func (s *Store) Remove(ctx context.Context, id string, by Caller) error {
	op := "remove " + id
	if err := s.leaderOnly(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := checkName("member id", id); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	done, err := s.beginChange(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer done()
	// The record goes first: when the leader removes itself it stops
	// being leader as soon as the raft change commits, and could no longer
	// write the record.
	_, err = s.Apply(ctx, by.recording(RemoveMember(id)))
	hadMember := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%s: %w", op, err)
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("%s: %w", op, s.translate(err))
	}
	inRaft := slices.ContainsFunc(cf.Configuration().Servers, func(srv raft.Server) bool { return string(srv.ID) == id })
	if !inRaft {
		if !hadMember {
			return fmt.Errorf("%s: %w", op, ErrNotFound)
		}
		// The server may have gone in an earlier attempt that stopped
		// before promoting.
		if err := s.fillVoters(ctx, by, "", "", s.reachable); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	}
	self := id == s.id
	if self {
		if err := s.fillVoters(ctx, by, id, "", s.reachable); err != nil {
			return fmt.Errorf("%s: before leaving: %w", op, err)
		}
	}
	if err := s.configChange(ctx, func(t time.Duration) raft.IndexFuture {
		return s.raft.RemoveServer(raft.ServerID(id), 0, t)
	}); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	s.forget(raft.ServerID(id))
	s.log.Info("server removed", "id", id)
	if !self {
		if err := s.fillVoters(ctx, by, "", "", s.reachable); err != nil {
			return fmt.Errorf("%s: removed; then: %w", op, err)
		}
	}
	return nil
}

// Leave removes this node from the cluster. Only the leader can change the
// configuration: on a follower Leave returns a *NotLeaderError and the
// appliance forwards "remove <this id>" to the leader, which calls Remove.
// On the leader the node promotes a non-voter if one is due, removes
// itself and steps down; raft then shuts down on this node, and the
// caller closes the Store. by is as for Remove.
func (s *Store) Leave(ctx context.Context, by Caller) error {
	if err := s.leaderOnly(); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	if err := s.Remove(ctx, s.id, by); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	return nil
}

// TransferLeadership hands leadership to the most up-to-date other
// voter and waits for that, within ctx; on a node that does not lead it
// returns nil at once. A leader about to stop calls it, so that the
// region's writes wait for a hand-over (tens of milliseconds) instead of
// an election after the leader's silence (about two seconds). It fails
// when no other voter can take over (a region of one).
func (s *Store) TransferLeadership(ctx context.Context) error {
	if s.isClosed() {
		return ErrClosed
	}
	if s.raft.State() != raft.Leader {
		return nil
	}
	f := s.raft.LeadershipTransfer()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("transfer leadership: %w", s.translate(err))
		}
		return nil
	case <-ctx.Done():
		// raft gives up on the transfer by itself after an election
		// timeout, which ends the goroutine.
		return fmt.Errorf("transfer leadership: %w", ctx.Err())
	}
}

// IsLeader reports whether this node is the raft leader right now.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the leader's raft id and address as raft knows them; both
// are empty while no leader is known.
func (s *Store) Leader() (id, raftAddr string) {
	addr, sid := s.raft.LeaderWithID()
	return string(sid), string(addr)
}

// LeaderMember returns the leader's Member record; its AdminAddr is where
// writes are forwarded. False while no leader is known or the leader has
// no record yet.
func (s *Store) LeaderMember() (Member, bool) {
	id, _ := s.Leader()
	if id == "" {
		return Member{}, false
	}
	m, ok := s.State().Members[id]
	return m, ok
}

// WaitForLeader blocks until a leader is known (possibly this node).
func (s *Store) WaitForLeader(ctx context.Context) error {
	for {
		// Subscribe before looking, so a change in between still wakes us.
		ch, cancel := s.leaders.subscribe()
		if s.isClosed() {
			cancel()
			return fmt.Errorf("wait for leader: %w", ErrClosed)
		}
		if id, _ := s.Leader(); id != "" {
			cancel()
			return nil
		}
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
			cancel()
			return fmt.Errorf("wait for leader: %w", ctx.Err())
		}
	}
}

// State returns the current state. It is immutable and shared: do not
// modify it. Reading it takes no lock.
func (s *Store) State() *State { return s.fsm.State() }

// Digest returns a hash of the whole FSM content (state and request-id
// memory); nodes that applied the same log report the same digest.
func (s *Store) Digest() string { return s.fsm.digest() }

// Changes returns a channel that receives a value after the state changes
// (an applied command or a restored snapshot) and after the leader
// changes. Notifications coalesce: one value may stand for many changes,
// so read State after each. The channel is closed when the Store closes;
// call the returned func to unsubscribe earlier.
func (s *Store) Changes() (<-chan struct{}, func()) { return s.changes.subscribe() }

// RaftAddr returns the address peers reach this node's raft at.
func (s *Store) RaftAddr() string { return string(s.trans.LocalAddr()) }

// Server is one entry of the raft configuration.
type Server struct {
	ID      string
	Address string
	Voter   bool
}

// Servers returns the latest raft configuration known to this node.
func (s *Store) Servers() ([]Server, error) {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, fmt.Errorf("servers: %w", s.translate(err))
	}
	var out []Server
	for _, srv := range cf.Configuration().Servers {
		out = append(out, Server{ID: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
	}
	return out, nil
}

// Stats describes this node's raft replica.
type Stats struct {
	// State is raft's state: "Follower", "Candidate", "Leader" or
	// "Shutdown".
	State string
	Term  uint64
	// LastLogIndex is the newest entry in the log or snapshot.
	LastLogIndex uint64
	// FirstLogIndex is the oldest entry still in the log (compaction moves
	// it up); 0 for an empty log.
	FirstLogIndex uint64
	CommitIndex   uint64
	// AppliedIndex is the newest entry raft handed to the FSM.
	AppliedIndex uint64
	// SnapshotIndex is the index of the newest snapshot taken or installed.
	SnapshotIndex uint64
	// StateIndex is State().Index: the last entry that changed the state.
	StateIndex uint64
	LeaderID   string
	LeaderAddr string
	// Peers is the number of other servers in the configuration; Voters
	// counts voters, this node included.
	Peers  int
	Voters int
	// Unreachable lists, on the leader, the peers whose heartbeats are
	// failing, sorted; none elsewhere. Join and Remove promote no
	// unreachable non-voter.
	Unreachable []string
	// SkippedCommands counts the log entries of unknown optional types
	// (IgnoreUnknownTypeFlag) this node skipped since Open: a newer
	// leader wrote them, and this node should be upgraded. It is this
	// node's count, not replicated state.
	SkippedCommands uint64
}

// Stats returns a snapshot of this node's raft figures.
func (s *Store) Stats() Stats {
	st := Stats{
		State:        s.raft.State().String(),
		Term:         s.raft.CurrentTerm(),
		LastLogIndex: s.raft.LastIndex(),
		CommitIndex:  s.raft.CommitIndex(),
		AppliedIndex: s.raft.AppliedIndex(),
		StateIndex:   s.State().Index,
		// The FSM counts skipped entries instead of logging from Apply.
		SkippedCommands: s.fsm.skipped.Load(),
	}
	st.LeaderID, st.LeaderAddr = s.Leader()
	if first, err := s.wal.FirstIndex(); err == nil {
		st.FirstLogIndex = first
	}
	if v, err := strconv.ParseUint(s.raft.Stats()["last_snapshot_index"], 10, 64); err == nil {
		st.SnapshotIndex = v
	}
	if servers, err := s.Servers(); err == nil {
		for _, srv := range servers {
			if srv.ID != s.id {
				st.Peers++
				if s.unreachable(raft.ServerID(srv.ID)) {
					st.Unreachable = append(st.Unreachable, srv.ID)
				}
			}
			if srv.Voter {
				st.Voters++
			}
		}
	}
	slices.Sort(st.Unreachable)
	return st
}

// notifier fans a coalesced "something changed" signal out to
// subscribers: each has a one-slot channel, so a slow reader misses
// nothing but the count, and the sender never blocks.
type notifier struct {
	mu     sync.Mutex
	closed bool
	subs   map[chan struct{}]struct{}
}

func newNotifier() *notifier {
	return &notifier{subs: map[chan struct{}]struct{}{}}
}

func (n *notifier) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		close(ch)
		return ch, func() {}
	}
	n.subs[ch] = struct{}{}
	return ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.subs, ch)
	}
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for ch := range n.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	for ch := range n.subs {
		close(ch)
	}
	n.subs = map[chan struct{}]struct{}{}
}
