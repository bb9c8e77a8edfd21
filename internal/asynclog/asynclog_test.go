package asynclog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// gate is an output that blocks every write until opened, as a stalled
// stderr (a full pipe to journald) would.
type gate struct {
	open chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(p)
}

func (g *gate) lines(t *testing.T) []map[string]any {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(g.buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestSink_NeverBlocksAndCountsDrops(t *testing.T) {
	out := &gate{open: make(chan struct{})}
	sink := New(out, Options{JSON: true, Queue: 16})
	log := slog.New(sink.Handler()).With("component", "test")

	const n = 5000
	start := time.Now()
	for i := 0; i < n; i++ {
		log.Info("record", "i", i)
	}
	took := time.Since(start)
	dropped := sink.Dropped()
	t.Logf("%d records logged in %s with the output blocked: %d dropped", n, took.Round(time.Microsecond), dropped)
	// The writer holds one record and a 64 KiB buffer's worth may have
	// gone through before the first write blocked; the rest waits in the
	// queue of 16 or is dropped.
	if dropped == 0 || dropped >= n {
		t.Fatalf("dropped %d of %d records, want some but not all", dropped, n)
	}
	if took > 5*time.Second {
		t.Fatalf("logging %d records took %s with the output blocked: the caller waited", n, took)
	}
	close(out.open)
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	lines := out.lines(t)
	var records, reported int
	last := -1
	for _, l := range lines {
		switch l["msg"] {
		case "record":
			i := int(l["i"].(float64))
			if i <= last {
				t.Fatalf("record %d written after record %d", i, last)
			}
			if l["component"] != "test" {
				t.Fatalf("record %d lost its attribute: %v", i, l)
			}
			last = i
			records++
		case "log records dropped: the log queue was full":
			reported += int(l["dropped"].(float64))
		default:
			t.Fatalf("unexpected line %v", l)
		}
	}
	if uint64(records)+dropped != n {
		t.Fatalf("%d records written + %d dropped, want %d", records, dropped, n)
	}
	if uint64(reported) != dropped {
		t.Fatalf("the log reports %d dropped, the counter %d", reported, dropped)
	}
}

func TestSink_CloseFlushesAndLaterRecordsAreWritten(t *testing.T) {
	var buf syncBuffer
	sink := New(&buf, Options{Level: slog.LevelDebug})
	log := slog.New(sink.Handler()).WithGroup("g")
	for i := 0; i < 100; i++ {
		log.Debug("before", "i", i)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	log.Info("after close")
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	for i := 0; i < 100; i++ {
		if !strings.Contains(got, fmt.Sprintf("msg=before g.i=%d\n", i)) {
			t.Fatalf("record %d missing after Close:\n%s", i, got)
		}
	}
	if !strings.Contains(got, "msg=\"after close\"") {
		t.Fatalf("a record logged after Close was not written:\n%s", got)
	}
	if sink.Dropped() != 0 {
		t.Fatalf("dropped %d with a free output", sink.Dropped())
	}
}

func TestSink_Level(t *testing.T) {
	var buf syncBuffer
	sink := New(&buf, Options{Level: slog.LevelWarn})
	log := slog.New(sink.Handler())
	log.Info("quiet")
	log.Warn("loud")
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); strings.Contains(got, "quiet") || !strings.Contains(got, "loud") {
		t.Fatalf("level warn wrote %q", got)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
