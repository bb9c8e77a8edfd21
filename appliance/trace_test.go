package appliance

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestTracer_KeepsEachMessagesEventsInOrder(t *testing.T) {
	tr := newTracer("n1", 1<<20, time.Minute, slog.New(slog.DiscardHandler))
	tr.accepted("m1", "app", "key-1", 2, "")
	tr.stored("m1", "app/d1", 7, "n2", false)
	tr.stored("m2", "app/d1", 8, "", false)
	tr.routed(time.Now(), "m1", "n2", 1, errors.New("redis down"))
	tr.handed("m1", "app/d1", 7, "n1-a", viaReplay)
	tr.retransmitted("m1", "app/d1", 7, "n1-a", 2)
	tr.fanout("g1", "app/news", 3)

	got := func(id string) []string {
		var out []string
		for _, r := range tr.lookup(id) {
			e := tr.event(r)
			out = append(out, fmt.Sprintf("%s %s %s %d %s %s %s %d %v", e.Event, e.App, e.Device, e.Seq, e.Route, e.To, e.Via, e.Attempt, e.Error))
		}
		return out
	}
	want := []string{
		"accepted app  0    0 ",
		"stored app d1 7 n2   0 ",
		"routed   0  n2  0 redis down",
		"handed app d1 7   replay 0 ",
		"retransmitted app d1 7    2 ",
	}
	if g := got("m1"); strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Fatalf("m1:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
	if g := got("m2"); len(g) != 1 {
		t.Fatalf("m2: %v", g)
	}
	evs := tr.lookup("g1")
	if len(evs) != 1 {
		t.Fatalf("g1: %v", evs)
	}
	if e := tr.event(evs[0]); e.Group != "news" || e.Device != "" || e.Sessions == nil || *e.Sessions != 3 || e.Broadcast {
		t.Fatalf("fanout %+v", e)
	}
	if got := tr.lookup("m"); len(got) != 0 {
		t.Fatalf("a prefix of an id matched: %v", got)
	}
	acc := tr.event(tr.lookup("m1")[0])
	if acc.APIKey != "key-1" || acc.Devices != 2 || acc.Node != "n1" {
		t.Fatalf("accepted %+v", acc)
	}
}

// TestTracer_BoundedMemoryDropsTheOldest: past its memory the tracer
// reuses its oldest chunks, and never holds more.
func TestTracer_BoundedMemoryDropsTheOldest(t *testing.T) {
	tr := newTracer("n1", 0, time.Hour, slog.New(slog.DiscardHandler)) // two chunks per shard
	id := "busy"
	const n = 20000
	for i := 1; i <= n; i++ {
		tr.written(id, "app/d", uint64(i), "s")
	}
	recs := tr.lookup(id)
	if len(recs) == 0 || len(recs) >= n {
		t.Fatalf("%d of %d events kept", len(recs), n)
	}
	if last := recs[len(recs)-1].seq; last != n {
		t.Fatalf("newest kept %d, want %d", last, n)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].seq != recs[i-1].seq+1 {
			t.Fatalf("kept events are not the newest run: %d after %d", recs[i].seq, recs[i-1].seq)
		}
	}
	if b, _ := tr.memory(); b > traceShards*2*traceChunk {
		t.Fatalf("holds %d bytes, at most %d allowed", b, traceShards*2*traceChunk)
	}
	t.Logf("%d events of %d kept in 2 chunks of %d bytes", len(recs), n, traceChunk)
}

func TestTracer_TTL(t *testing.T) {
	tr := newTracer("n1", 1<<20, time.Minute, slog.New(slog.DiscardHandler))
	tr.addAt(time.Now().Add(-2*time.Minute), traceAcked, "m", "app/d", 1, "s", "", 0)
	tr.acked("m", "app/d", 2, "s")
	recs := tr.lookup("m")
	if len(recs) != 1 || recs[0].seq != 2 {
		t.Fatalf("events past the TTL returned: %+v", recs)
	}
	_, oldest := tr.memory()
	if time.Since(oldest) < 2*time.Minute {
		t.Fatalf("oldest %s", oldest)
	}
}

func TestTracer_OffRecordsNothing(t *testing.T) {
	var tr *tracer = newTracer("n1", -1, time.Minute, slog.New(slog.DiscardHandler))
	if tr != nil {
		t.Fatal("a negative memory did not turn tracing off")
	}
	tr.accepted("m", "app", "k", 1, "")
	tr.written("m", "app/d", 1, "s")
	if got := tr.lookup("m"); got != nil {
		t.Fatalf("off tracer returned %v", got)
	}
}

// TestTracer_RecordsWithoutAllocating: an event costs no allocation, so
// tracing adds no garbage to the delivery path.
func TestTracer_RecordsWithoutAllocating(t *testing.T) {
	tr := newTracer("n1", 1<<20, time.Minute, slog.New(slog.DiscardHandler))
	allocs := testing.AllocsPerRun(1000, func() {
		tr.handed("0195e3c1a2b04c5d8e6f7a8b9c0d1e2f", "app/device-123456", 42, "n1-abc", viaLive)
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per event", allocs)
	}
}

func TestTracer_DebugLogCarriesTheMessageID(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tr := newTracer("n1", 1<<20, time.Minute, log)
	tr.stored("m-7", "app/d", 3, "n2", false)
	tr.handed("m-7", "app/d", 3, "n1-x", viaLive)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("log:\n%s", buf.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, "msg_id=m-7") {
			t.Fatalf("line without the message id: %s", l)
		}
	}
	if !strings.Contains(lines[0], `msg="message stored"`) || !strings.Contains(lines[0], "route=n2") ||
		!strings.Contains(lines[1], "via=live") || !strings.Contains(lines[1], "session=n1-x") {
		t.Fatalf("log:\n%s", buf.String())
	}
}

// BenchmarkTracer_Handed measures recording one event, the cost every
// hop of every message pays with tracing on: wall time, and CPU time
// (getrusage) per event, steadier on a busy machine.
func BenchmarkTracer_Handed(b *testing.B) {
	tr := newTracer("n1", 64<<20, time.Minute, slog.New(slog.DiscardHandler))
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = fmt.Sprintf("0195e3c1a2b04c5d8e6f7a8b9c0d%04x", i)
	}
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tr.handed(ids[i&1023], "app/device-123456", uint64(i), "n1-abc", viaLive)
			i++
		}
	})
	b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// BenchmarkDelivery_Traced measures what tracing adds to the node's
// delivery path, where its hooks are: one stored message offered to 100
// sessions (sink transports, no socket, no Redis), written out by their
// flushers and acked, per iteration, with tracing on and off. It reports
// per device-push (handed, written and acked are three events each) the
// wall time and the process's CPU time (getrusage), which other work on
// a busy machine disturbs far less. Run with -cpu 1 so the flushers'
// work is in the timing:
//
//	go test ./appliance -run XXX -bench Delivery_Traced -cpu 1 -count 5
func BenchmarkDelivery_Traced(b *testing.B) {
	for _, mode := range []struct {
		name   string
		memory int
	}{{"on", 0}, {"off", -1}} {
		b.Run(mode.name, func(b *testing.B) {
			cfg := testConfig()
			cfg.TraceMemory, cfg.HeartbeatInterval, cfg.Window = mode.memory, time.Minute, 1024
			n := newSinkNode(b, cfg)
			const devices = 100
			sessions := make([]*session, devices)
			targets := make([]entryTarget, devices)
			for i := range sessions {
				sessions[i], _ = openSink(b, n, fmt.Sprint("bench-", i), false)
				targets[i] = entryTarget{device: sessions[i].key}
			}
			msg := &entryMessage{id: "0195e3c1a2b04c5d8e6f7a8b9c0d1e2f", payload: make([]byte, 64)}
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for it := 0; it < b.N; it++ {
				for i := range targets {
					targets[i].seq = uint64(it + 1)
				}
				n.deliverTargets(msg, targets, viaLive)
				for _, s := range sessions {
					s.flush()
					s.onAck(uint64(it + 1))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*devices), "ns/push")
			b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/float64(b.N*devices), "cpu-ns/push")
		})
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
