package raftmeta

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Sync and the read index.
//
// A node that just started, or that is asked about an app it does not
// know, must not answer from a state that may lag the region's: raft
// replays a follower's log only once the leader tells it the commit
// index, and a follower learns of each new commit a little after the
// leader acknowledged it. Sync closes that gap the way etcd's
// linearizable reads do: it obtains a read index — the leader's applied
// index, taken after the leader confirmed it still leads and applied its
// own term's first entry — and waits until this node has applied as much.
// Everything the region acknowledged before Sync was called is then in
// State.
//
// A follower asks the leader over the raft port itself: the stream layer
// below hands raft every connection except those opening with
// readIndexByte, which it answers. Raft's connections open with its RPC
// type byte (0 to 4), so the two never mix, and no other listener, port
// or credential is involved. With Config.TLS the layer completes the TLS
// handshake before it reads that byte: both protocols are mutual TLS, and
// a peer without a certificate the server accepts is gone before either
// sees a byte from it.

// readIndexByte opens a read-index request on the raft port.
const readIndexByte = 'R'

// Read-index answer: one status byte, then the index (8 bytes, big endian).
const (
	readIndexOK        = 0
	readIndexNotLeader = 1
)

// syncPoll is how often Sync looks at the FSM's applied index while
// catching up; the FSM notifies changes of the state only, and the entry
// waited for may be a command that changed nothing.
const syncPoll = 2 * time.Millisecond

// muxLayer is the raft transport's TCP stream layer, sharing its port with
// the read-index protocol, over TLS when tls is set.
type muxLayer struct {
	ln        net.Listener
	advertise net.Addr
	tls       *TLS // nil: plain TCP
	log       *slog.Logger
	serve     func(net.Conn) // answers one read-index request

	raftConns chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup // the accept loop and the connections it sorts
}

func newMuxLayer(bind string, advertise net.Addr, tlsConf *TLS, log *slog.Logger) (*muxLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	return &muxLayer{ln: ln, advertise: advertise, tls: tlsConf, log: log,
		raftConns: make(chan net.Conn), closed: make(chan struct{})}, nil
}

// start begins accepting; serve answers read-index requests.
func (m *muxLayer) start(serve func(net.Conn)) {
	m.serve = serve
	m.wg.Add(1)
	go m.acceptLoop()
}

func (m *muxLayer) acceptLoop() {
	defer m.wg.Done()
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// A listener that fails for good: let raft's Accept see it.
			m.Close()
			return
		}
		m.wg.Add(1)
		go m.sort(conn)
	}
}

// sort completes the TLS handshake, if any, then reads a connection's
// first byte and hands it to raft or answers it.
func (m *muxLayer) sort(conn net.Conn) {
	defer m.wg.Done()
	_ = conn.SetDeadline(time.Now().Add(transportTimeout))
	if m.tls != nil {
		tc := tls.Server(conn, m.tls.Server)
		if err := tc.Handshake(); err != nil {
			// Refused before raft or the read index saw anything.
			m.log.Warn("raft port: refused a connection that did not complete mutual TLS", "remote", conn.RemoteAddr().String(), "err", err)
			_ = conn.Close()
			return
		}
		conn = tc
	}
	var first [1]byte
	if _, err := io.ReadFull(conn, first[:]); err != nil {
		_ = conn.Close()
		return
	}
	_ = conn.SetDeadline(time.Time{})
	if first[0] == readIndexByte {
		m.serve(conn)
		_ = conn.Close()
		return
	}
	select {
	case m.raftConns <- &peekedConn{Conn: conn, first: first[0], unread: true}:
	case <-m.closed:
		_ = conn.Close()
	}
}

// Accept implements raft.StreamLayer: the next raft connection.
func (m *muxLayer) Accept() (net.Conn, error) {
	select {
	case c := <-m.raftConns:
		return c, nil
	case <-m.closed:
		return nil, net.ErrClosed
	}
}

// Close implements raft.StreamLayer; raft's transport calls it on shutdown.
func (m *muxLayer) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.closed)
		err = m.ln.Close()
	})
	return err
}

// wait returns once the accept loop and every connection being sorted are
// done; call after Close.
func (m *muxLayer) wait() { m.wg.Wait() }

// Addr implements raft.StreamLayer: the advertised address.
func (m *muxLayer) Addr() net.Addr { return m.advertise }

// Dial implements raft.StreamLayer.
func (m *muxLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return m.dial(ctx, string(address))
}

// dial opens a connection to the raft port at addr: TCP, and the TLS
// handshake when the layer runs TLS, both within ctx.
func (m *muxLayer) dial(ctx context.Context, addr string) (net.Conn, error) {
	if m.tls == nil {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	d := tls.Dialer{Config: m.tls.Client(addr)}
	return d.DialContext(ctx, "tcp", addr)
}

// peekedConn gives back the byte the mux read to sort the connection.
type peekedConn struct {
	net.Conn
	first  byte
	unread bool
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if c.unread && len(p) > 0 {
		p[0] = c.first
		c.unread = false
		return 1, nil
	}
	return c.Conn.Read(p)
}

// Sync waits until this node's State holds everything the region had
// acknowledged when Sync was called (see the comment at the top of this
// file). It waits for a leader first. Concurrent calls share one read
// index, taken after the last of them began. It returns ctx's error,
// wrapped, when ctx ends first, and ErrClosed once the store is closed.
func (s *Store) Sync(ctx context.Context) error {
	index, err := s.syncs.readIndex(ctx)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	t := time.NewTicker(syncPoll)
	defer t.Stop()
	for s.fsm.applied.Load() < index {
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("sync: applied %d of %d: %w", s.fsm.applied.Load(), index, ctx.Err())
		case <-s.stop:
			return fmt.Errorf("sync: %w", ErrClosed)
		}
	}
	return nil
}

// leaderReadIndex is the leader's side of a read index: its FSM's applied
// index once it has confirmed with a quorum that it still leads, and once
// a barrier of its term is applied (a new leader does not know which
// entries of earlier terms are committed until an entry of its own term
// is; the barrier is such an entry, and raft answers it only after the
// FSM applied everything before it). A write this leader acknowledged
// was applied by its FSM before Apply returned.
func (s *Store) leaderReadIndex() (uint64, error) {
	if err := s.raft.VerifyLeader().Error(); err != nil {
		return 0, s.translate(err)
	}
	term := s.raft.CurrentTerm()
	s.mu.Lock()
	barrierDone := s.barrierTerm == term
	s.mu.Unlock()
	if !barrierDone {
		if err := s.raft.Barrier(transportTimeout).Error(); err != nil {
			return 0, s.translate(err)
		}
		s.mu.Lock()
		s.barrierTerm = term
		s.mu.Unlock()
	}
	return s.fsm.applied.Load(), nil
}

// serveReadIndex answers one read-index request on the raft port.
func (s *Store) serveReadIndex(conn net.Conn) {
	var answer [9]byte
	answer[0] = readIndexNotLeader
	if s.IsLeader() {
		if index, err := s.leaderReadIndex(); err == nil {
			answer[0] = readIndexOK
			binary.BigEndian.PutUint64(answer[1:], index)
		}
	}
	_ = conn.SetWriteDeadline(time.Now().Add(transportTimeout))
	_, _ = conn.Write(answer[:])
}

// askReadIndex takes a read index: from raft itself on the leader, over
// the leader's raft port elsewhere. It waits for a leader, and tries
// again when the node it asked no longer leads.
func (s *Store) askReadIndex(ctx context.Context) (uint64, error) {
	for {
		if err := s.WaitForLeader(ctx); err != nil {
			return 0, err
		}
		if s.IsLeader() {
			index, err := s.leaderReadIndex()
			if err == nil || !errors.Is(err, ErrNotLeader) {
				return index, err
			}
		} else if _, addr := s.Leader(); addr != "" {
			index, err := s.mux.dialReadIndex(ctx, addr)
			if err == nil {
				return index, nil
			}
			s.log.Debug("read index from the leader failed; retrying", "leader", addr, "err", err)
		}
		// Leadership is moving: give the election a moment.
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-s.stop:
			return 0, ErrClosed
		}
	}
}

// dialReadIndex asks the raft port at addr for a read index.
func (m *muxLayer) dialReadIndex(ctx context.Context, addr string) (uint64, error) {
	dctx, cancel := context.WithTimeout(ctx, transportTimeout)
	conn, err := m.dial(dctx, addr)
	cancel()
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	deadline := time.Now().Add(transportTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	if _, err := conn.Write([]byte{readIndexByte}); err != nil {
		return 0, err
	}
	var answer [9]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return 0, err
	}
	if answer[0] != readIndexOK {
		return 0, fmt.Errorf("%s: %w", addr, ErrNotLeader)
	}
	return binary.BigEndian.Uint64(answer[1:]), nil
}

// syncRounds coalesces concurrent read-index requests: a caller joins the
// next round that has not started yet, so the index it gets was taken
// after it called, and however many callers wait, one round runs at a
// time. Its goroutine is waited for by close.
type syncRounds struct {
	ask func(context.Context) (uint64, error)

	mu      sync.Mutex
	next    *syncRound // the round callers join; nil until one is needed
	running bool
	closed  bool
	wg      sync.WaitGroup
}

type syncRound struct {
	done    chan struct{}
	index   uint64
	err     error
	waiters int
	ctx     context.Context // ended when its last waiter gives up
	cancel  context.CancelFunc
}

// readIndex joins the next round and waits for its index.
func (r *syncRounds) readIndex(ctx context.Context) (uint64, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return 0, ErrClosed
	}
	round := r.next
	if round == nil {
		round = &syncRound{done: make(chan struct{})}
		round.ctx, round.cancel = context.WithCancel(context.Background())
		r.next = round
	}
	round.waiters++
	if !r.running {
		r.running = true
		r.wg.Add(1)
		go r.run()
	}
	r.mu.Unlock()

	select {
	case <-round.done:
		return round.index, round.err
	case <-ctx.Done():
		r.mu.Lock()
		round.waiters--
		if round.waiters == 0 {
			// Nobody wants it any more: drop it before it starts, or
			// stop it.
			if r.next == round {
				r.next = nil
			}
			round.cancel()
		}
		r.mu.Unlock()
		return 0, ctx.Err()
	}
}

// run runs rounds one after another while callers wait for one.
func (r *syncRounds) run() {
	defer r.wg.Done()
	for {
		r.mu.Lock()
		round := r.next
		r.next = nil
		if round == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		round.index, round.err = r.ask(round.ctx)
		round.cancel()
		close(round.done)
	}
}

// close refuses new rounds and waits for the running one, which the
// store's stop channel ends.
func (r *syncRounds) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.wg.Wait()
}
