package appliance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
)

// sinkTransport is an in-process transport: it records what the session
// writes and reports its close straight back. Tests and benchmarks use it
// to drive sessions without sockets (and under -race).
type sinkTransport struct {
	s      *session
	keep   bool // keep written bytes for decoding
	writes atomic.Int64
	bytes  atomic.Int64

	// beforeWrite, when set, runs at the start of every write.
	beforeWrite func()

	mu       sync.Mutex
	data     []byte
	closed   bool
	reason   closeReason
	closedAt time.Time
}

func (t *sinkTransport) write(b []byte, off int, _ time.Time) error {
	b = b[off:]
	if t.beforeWrite != nil {
		t.beforeWrite()
	}
	t.writes.Add(1)
	t.bytes.Add(int64(len(b)))
	if t.keep {
		t.mu.Lock()
		t.data = append(t.data, b...)
		t.mu.Unlock()
	}
	return nil
}

func (t *sinkTransport) close(r closeReason) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed, t.reason, t.closedAt = true, r, time.Now()
	t.mu.Unlock()
	t.s.onTransportClosed(nil)
}

func (t *sinkTransport) clearReadDeadline()  {}
func (t *sinkTransport) remoteAddr() string  { return "sink" }
func (t *sinkTransport) kind() transportKind { return kindSink }

// frames decodes everything written so far, flattening batches.
func (t *sinkTransport) frames() []wire.Frame {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []wire.Frame
	d := wire.Decoder{Max: 1 << 22}
	d.Write(t.data)
	for {
		f, err := d.Next()
		if f == nil || err != nil {
			return out
		}
		if b, ok := f.(*wire.Batch); ok {
			_ = b.Each(1<<22, func(inner wire.Frame) error { out = append(out, inner); return nil })
			continue
		}
		out = append(out, f)
	}
}

func (t *sinkTransport) isClosed() (bool, closeReason) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed, t.reason
}

// newIdleNode builds a node whose loops do not run and which opens no
// socket: nothing is flushed, and no timer fires, unless the test says.
func newIdleNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// newSinkNode builds a node whose loops run but which opens no socket.
func newSinkNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n := newIdleNode(t, cfg)
	n.startLoops()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return n
}

// openSink connects device through a sink transport with a real HELLO.
func openSink(t testing.TB, n *Node, device string, keep bool) (*session, *sinkTransport) {
	t.Helper()
	st := &sinkTransport{keep: keep}
	s := n.newSession(st)
	st.s = s
	s.onMessage(wire.Append(nil, &wire.Hello{App: testApp, Device: device, Token: issue(t, device)}))
	if !s.isOpen() {
		t.Fatalf("sink session for %s did not open", device)
	}
	return s, st
}

func TestSink_TakeoverKicksPreviousSession(t *testing.T) {
	n := newSinkNode(t, testConfig())
	first, ft := openSink(t, n, "d1", true)
	second, _ := openSink(t, n, "d1", false)
	if closed, reason := ft.isClosed(); !closed || reason != closeKicked {
		t.Fatalf("first session closed=%v reason=%v, want kicked", closed, reason)
	}
	frames := ft.frames()
	if c, ok := frames[len(frames)-1].(*wire.Control); !ok || c.Kind != wire.ControlKick {
		t.Fatalf("last frame to the first session %#v, want CONTROL kick", frames[len(frames)-1])
	}
	if n.hub.lookup(inboxKey(testApp, "d1")) != second || n.hub.count.Load() != 1 {
		t.Fatalf("registry holds %v (count %d), want the second session", n.hub.lookup(inboxKey(testApp, "d1")), n.hub.count.Load())
	}
	_ = first
}

func TestSink_SlowConsumerCutAtQueueCap(t *testing.T) {
	cfg := testConfig()
	cfg.QueueFrames = 8
	n := newIdleNode(t, cfg) // the test flushes
	slow, st := openSink(t, n, "slow", false)
	_, ok := openSink(t, n, "ok", true)
	// A burst larger than the queue within one flush tick.
	for i := 0; i <= cfg.QueueFrames; i++ {
		slow.send(wire.AppendPush(nil, &wire.Push{ID: fmt.Sprint("burst", i)}))
	}
	if closed, reason := st.isClosed(); !closed || reason != closeSlow {
		t.Fatalf("slow session closed=%v reason=%v, want slow_consumer", closed, reason)
	}
	for i := 0; i < 8; i++ {
		if got := n.hub.fanout(wire.AppendPush(nil, &wire.Push{ID: fmt.Sprint(i)}), 1, "", audience{}); got != 1 {
			t.Fatalf("fanout reached %d sessions, want only the healthy one", got)
		}
		for _, f := range n.hub.flushers {
			f.pass(nil, nil)
		}
	}
	if closed, _ := ok.isClosed(); closed {
		t.Fatal("the healthy session was closed too")
	}
	pushes := 0
	for _, f := range ok.frames() {
		if _, isPush := f.(*wire.Push); isPush {
			pushes++
		}
	}
	if pushes != 8 {
		t.Fatalf("healthy session got %d pushes, want 8", pushes)
	}
}

func TestSink_RetransmitsUntilAcked(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.HeartbeatInterval = time.Minute // the device sends nothing for seconds here
	n := newSinkNode(t, cfg)
	s, st := openSink(t, n, "d1", true)
	s.mu.Lock()
	s.epoch = "e1"
	s.mu.Unlock()
	push := func(seq uint64) offer {
		return offer{epoch: "e1", seq: seq, frame: wire.AppendPush(nil, &wire.Push{Seq: seq, ID: fmt.Sprint("m", seq)})}
	}
	if got := s.deliver([]offer{push(1), push(2)}); got != offerSent {
		t.Fatalf("deliver = %v", got)
	}
	if got := s.deliver([]offer{push(4)}); got != offerHeld {
		t.Fatalf("out-of-order seq = %v, want held", got)
	}
	countPush := func(seq uint64, redelivered bool) int {
		k := 0
		for _, f := range st.frames() {
			if p, ok := f.(*wire.Push); ok && p.Seq == seq && p.Redelivery == redelivered {
				k++
			}
		}
		return k
	}
	poll.Until(t, 3*cfg.AckTimeout, func() error {
		if countPush(1, true) == 0 {
			return errors.New("seq 1 not retransmitted")
		}
		return nil
	})
	s.onMessage(wire.Append(nil, &wire.Ack{Seq: 2}))
	s.mu.Lock()
	window, acked := len(s.window), s.acked
	s.mu.Unlock()
	if window != 0 || acked != 2 {
		t.Fatalf("after ack: window %d acked %d", window, acked)
	}
	before := countPush(2, true)
	time.Sleep(2 * cfg.AckBackoffMax)
	if countPush(2, true) != before {
		t.Fatal("an acked message was retransmitted")
	}
	s.onMessage(wire.Append(nil, &wire.Ack{Seq: 9}))
	if closed, reason := st.isClosed(); !closed || reason != closeProtocol {
		t.Fatalf("ack past what was sent: closed=%v reason=%v, want protocol", closed, reason)
	}
}

func TestWheel_FiresInOrderAndDropsStale(t *testing.T) {
	start := time.Unix(0, 0)
	w := newWheel(10*time.Millisecond, start)
	a, b := &session{}, &session{}
	w.schedule(a, start.Add(50*time.Millisecond))
	w.schedule(b, start.Add(20*time.Millisecond+wheelSlots*10*time.Millisecond)) // next revolution
	w.schedule(a, start.Add(30*time.Millisecond))                                // earlier: re-arms
	if got := w.advance(start.Add(40*time.Millisecond), nil); len(got) != 1 || got[0] != a {
		t.Fatalf("fired %v, want [a]", got)
	}
	if got := w.advance(start.Add(100*time.Millisecond), nil); len(got) != 0 {
		t.Fatalf("stale entry fired: %v", got)
	}
	if got := w.advance(start.Add(30*time.Millisecond+wheelSlots*10*time.Millisecond), nil); len(got) != 1 || got[0] != b {
		t.Fatalf("next-revolution entry: fired %v, want [b]", got)
	}
}

// BenchmarkHub_Fanout10k frames one PUSH once and hands it to 10,000
// sessions on sink transports, then flushes every session: the work of one
// broadcast. allocs/recipient should be 0.
func BenchmarkHub_Fanout10k(b *testing.B) {
	const recipients = 10_000
	cfg := testConfig()
	n, err := New(cfg, Deps{})
	if err != nil {
		b.Fatal(err)
	}
	sinks := make([]*sinkTransport, 0, recipients)
	for i := 0; i < recipients; i++ {
		_, st := openSink(b, n, fmt.Sprintf("dev-%d", i), false)
		sinks = append(sinks, st)
	}
	for _, f := range n.hub.flushers {
		f.pass(nil, nil)
	}
	frame := wire.AppendPush(nil, &wire.Push{ID: "0123456789abcdef0123456789abcdef", Business: "news", Priority: wire.PriorityNormal,
		Created: uint64(time.Now().UnixMilli()), Payload: make([]byte, 256)})
	urgent := make([][]*session, len(n.hub.flushers))
	bulk := make([][]*session, len(n.hub.flushers))
	b.ReportAllocs()
	b.ResetTimer()
	var ms0, ms1 runtimeMemStats
	ms0.read()
	for i := 0; i < b.N; i++ {
		if got := n.hub.fanout(frame, 1, "", audience{}); got != recipients {
			b.Fatalf("fanout reached %d", got)
		}
		var wg sync.WaitGroup
		for k, f := range n.hub.flushers {
			wg.Add(1)
			go func() { defer wg.Done(); urgent[k], bulk[k] = f.pass(urgent[k][:0], bulk[k][:0]) }()
		}
		wg.Wait()
	}
	ms1.read()
	b.StopTimer()
	perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(recipients, "recipients")
	b.ReportMetric(perOp/recipients, "ns/recipient")
	b.ReportMetric(float64(ms1.mallocs-ms0.mallocs)/float64(b.N)/recipients, "allocs/recipient")
	b.ReportMetric(recipients*1e9/perOp, "deliveries/s")
	var written int64
	for _, st := range sinks {
		written += st.writes.Load()
	}
	if written < int64(recipients*b.N) {
		b.Fatalf("sinks saw %d writes, want ≥ %d", written, recipients*b.N)
	}
}

// TestSink_FramesOfOneTickAreMergedAndCompressed: frames queued for one
// connection before a flush go out as one write — a BATCH — compressed for
// a device that offered lz4 once it is over the threshold.
func TestSink_FramesOfOneTickAreMergedAndCompressed(t *testing.T) {
	n := newIdleNode(t, testConfig()) // the test flushes
	for _, lz4 := range []bool{false, true} {
		st := &sinkTransport{keep: true}
		s := n.newSession(st)
		st.s = s
		hello := &wire.Hello{App: testApp, Device: fmt.Sprint("merge-", lz4), Token: issue(t, fmt.Sprint("merge-", lz4))}
		if lz4 {
			hello.Caps = wire.CapLZ4
		}
		s.onMessage(wire.Append(nil, hello))
		for i := 0; i < 20; i++ {
			s.send(wire.AppendPush(nil, &wire.Push{ID: fmt.Sprint("m", i), Payload: []byte("the same payload, compressible")}))
		}
		s.flush()
		if w := st.writes.Load(); w != 1 {
			t.Fatalf("lz4=%v: WELCOME and 20 pushes took %d writes, want 1", lz4, w)
		}
		st.mu.Lock()
		raw := append([]byte(nil), st.data...)
		st.mu.Unlock()
		if wire.Type(raw[1]) != wire.TypeBatch || (raw[2]&wire.FlagLZ4 != 0) != lz4 {
			t.Fatalf("lz4=%v: wrote type %s flags %#x", lz4, wire.Type(raw[1]), raw[2])
		}
		if got := len(st.frames()); got != 21 {
			t.Fatalf("lz4=%v: the batch holds %d frames, want 21", lz4, got)
		}
	}
}

// TestSink_StaleConnectionCannotDeliver: once the route names a newer
// connection of the device (elsewhere), a relayed push carrying that
// connection's epoch is not handed to the older session still registered
// here (its kick may still be on its way); a push for the session's own
// epoch is delivered.
func TestSink_StaleConnectionCannotDeliver(t *testing.T) {
	n := newSinkNode(t, testConfig())
	s, st := openSink(t, n, "d1", true)
	key := inboxKey(testApp, "d1")
	s.mu.Lock()
	s.connEpoch = 5
	inboxEpoch := s.epoch
	s.mu.Unlock()
	msg := &entryMessage{id: "m1", priority: wire.PriorityNormal, payload: []byte("x")}
	pushes := func() int {
		k := 0
		for _, f := range st.frames() {
			if _, ok := f.(*wire.Push); ok {
				k++
			}
		}
		return k
	}

	if took := n.deliverTargets(msg, []entryTarget{{device: key, connEpoch: 6, inboxEpoch: inboxEpoch, seq: 1}}, viaLive); took[0] {
		t.Fatal("a push routed to the device's newer connection was taken by the older one")
	}
	if took := n.deliverTargets(msg, []entryTarget{{device: key, connEpoch: 5, inboxEpoch: inboxEpoch, seq: 1}}, viaLive); !took[0] {
		t.Fatal("a push routed to this connection was not taken")
	}
	s.flush()
	if k := pushes(); k != 1 {
		t.Fatalf("the session sent %d PUSHes, want only the one routed to it", k)
	}
	if s.olderThan(5) || !s.olderThan(6) {
		t.Fatal("olderThan does not compare connection epochs")
	}
}

// TestSink_CloseLastFrameFollowsFlushedOutput closes a session while a
// flush is writing what it took from the queue: the close's last frame
// reaches the transport after those frames, not before them.
func TestSink_CloseLastFrameFollowsFlushedOutput(t *testing.T) {
	n := newIdleNode(t, testConfig()) // the test flushes
	s, st := openSink(t, n, "d1", true)
	s.flush() // WELCOME
	for k := 0; k < 5; k++ {
		s.send(wire.Append(nil, &wire.Pong{Time: uint64(k)}))
	}
	inWrite, release := make(chan struct{}), make(chan struct{})
	st.beforeWrite = func() {
		st.beforeWrite = nil // only the flush's write waits
		close(inWrite)
		<-release
	}
	flushed := make(chan struct{})
	go func() { defer close(flushed); s.flush() }()
	<-inWrite
	kicked := make(chan struct{})
	go func() { defer close(kicked); s.kick("test") }()
	// A close that does not wait for the flush finishes at once; one that
	// waits is let through by releasing the flush.
	select {
	case <-kicked:
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-flushed
	<-kicked
	var kinds []wire.Type
	for _, f := range st.frames()[1:] {
		kinds = append(kinds, f.Type())
	}
	want := []wire.Type{wire.TypePong, wire.TypePong, wire.TypePong, wire.TypePong, wire.TypePong, wire.TypeControl}
	if !slices.Equal(kinds, want) {
		t.Fatalf("frames after WELCOME %v, want the 5 PONGs, then the kick", kinds)
	}
}

// TestSink_UnicastOvertakesAFanOut: output queued for one device while the
// flusher writes a fan-out to many goes out after at most one more chunk
// of the fan-out, not after all of it.
func TestSink_UnicastOvertakesAFanOut(t *testing.T) {
	cfg := testConfig()
	cfg.Shards = 1           // one shard, one flusher: one order of writes
	n := newIdleNode(t, cfg) // the test flushes
	const members = 20 * bulkChunk
	lone, loneSink := openSink(t, n, "lone", false)
	sinks := make([]*sinkTransport, members)
	for i := range sinks {
		var s *session
		s, sinks[i] = openSink(t, n, fmt.Sprint("member-", i), false)
		if ok, _ := n.hub.join(s, "room", viaDevice, 0); !ok {
			t.Fatalf("member-%d did not join", i)
		}
	}
	flusher := n.hub.shards[0].flusher
	flusher.pass(nil, nil) // the handshakes' replies

	var writes atomic.Int64 // the fan-out's, in the flusher's order
	unicastAt, sentAt := int64(-1), int64(-1)
	loneSink.beforeWrite = func() { unicastAt = writes.Load() }
	for _, st := range sinks {
		st.beforeWrite = func() {
			if writes.Add(1) == 2 {
				sentAt = 2
				lone.send(wire.AppendPush(nil, &wire.Push{ID: "unicast"}))
			}
		}
	}
	if got := n.hub.fanout(wire.AppendPush(nil, &wire.Push{ID: "fan-out"}), 1, "room", audience{}); got != members {
		t.Fatalf("fan-out reached %d sessions, want %d", got, members)
	}
	flusher.pass(nil, nil)
	if got := writes.Load(); got != members {
		t.Fatalf("the pass wrote %d of the fan-out's %d sessions", got, members)
	}
	if sentAt < 0 || unicastAt < 0 {
		t.Fatalf("the unicast was sent after fan-out write %d and written after %d", sentAt, unicastAt)
	}
	if unicastAt > sentAt+bulkChunk {
		t.Fatalf("the unicast queued after fan-out write %d went out after write %d of %d: more than a chunk (%d) later",
			sentAt, unicastAt, members, bulkChunk)
	}
}
