package appliance

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
)

// TestFanoutLines_QueuedFanoutsMergeInOrder: fan-outs that arrive while
// one of their audience runs go out together in the next round, in the
// order they arrived, and each caller learns its round's recipients; a
// fan-out of another audience does not wait for them.
func TestFanoutLines_QueuedFanoutsMergeInOrder(t *testing.T) {
	var l fanoutLines
	type call struct {
		frames string
		ids    []string
	}
	var mu sync.Mutex
	var calls []call
	release := make(chan struct{})
	run := func(frames []byte, ids []string, group string, _ audience) int {
		mu.Lock()
		calls = append(calls, call{string(frames), slices.Clone(ids)})
		first := len(calls) == 1
		mu.Unlock()
		if first {
			<-release
		}
		return len(ids) * 10
	}
	aud := audience{business: "news"}
	got := map[string]int{}
	var gotMu sync.Mutex
	var wg sync.WaitGroup
	push := func(id string, aud audience) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := l.fanout(id, []byte(id), "app/room", aud, run)
			gotMu.Lock()
			got[id] = k
			gotMu.Unlock()
		}()
	}
	joined := func(want int) func() error {
		return func() error {
			l.mu.Lock()
			defer l.mu.Unlock()
			line := l.lines[fanoutKey("app/room", aud)]
			if line == nil || line.open == nil || len(line.open.ids) != want {
				return fmt.Errorf("%d fan-outs not yet queued", want)
			}
			return nil
		}
	}
	push("a", aud)
	poll.Until(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(calls) != 1 {
			return fmt.Errorf("the first fan-out has not run")
		}
		return nil
	})
	for i, id := range []string{"b", "c", "d"} {
		push(id, aud)
		poll.Until(t, 5*time.Second, joined(i+1))
	}
	// Another audience of the same group runs beside the blocked round.
	other := audience{business: "sport"}
	if k := l.fanout("x", []byte("x"), "app/room", other, run); k != 10 {
		t.Fatalf("the other audience's fan-out reached %d, want 10", k)
	}
	close(release)
	wg.Wait()
	want := []call{{"a", []string{"a"}}, {"x", []string{"x"}}, {"bcd", []string{"b", "c", "d"}}}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Fatalf("rounds %v, want %v", calls, want)
	}
	if fmt.Sprint(got) != fmt.Sprint(map[string]int{"a": 10, "b": 30, "c": 30, "d": 30}) {
		t.Fatalf("recipients per caller %v", got)
	}
	poll.Until(t, 5*time.Second, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.lines) != 0 {
			return fmt.Errorf("%d lines left after every round ran", len(l.lines))
		}
		return nil
	})
}

// TestFanoutLines_QueuedRoundKeepsThePace: a round queued behind a
// running one starts fanoutPace after it at the earliest, so that the
// fan-outs of a storm have time to gather; a fan-out with no round of its
// audience running leaves nothing behind to wait for.
func TestFanoutLines_QueuedRoundKeepsThePace(t *testing.T) {
	var l fanoutLines
	var mu sync.Mutex
	var starts []time.Time
	started, release := make(chan struct{}), make(chan struct{})
	run := func(_ []byte, ids []string, _ string, _ audience) int {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		if ids[0] == "a" {
			close(started)
			<-release
		}
		return 1
	}
	aud := audience{business: "news"}
	l.fanout("solo", []byte("s"), "g", aud, run)
	l.mu.Lock()
	left := len(l.lines)
	l.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d lines left after a round that ran alone: the next fan-out would wait", left)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.fanout("a", []byte("a"), "g", aud, run)
	}()
	<-started
	second := make(chan struct{})
	go func() {
		defer close(second)
		l.fanout("b", []byte("b"), "g", aud, run)
	}()
	poll.Until(t, 5*time.Second, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if line := l.lines[fanoutKey("g", aud)]; line == nil || line.open == nil {
			return fmt.Errorf("b not queued")
		}
		return nil
	})
	close(release)
	<-done
	<-second
	if gap := starts[2].Sub(starts[1]); gap < fanoutPace {
		t.Fatalf("the queued round began %s after the one it waited for, want at least %s", gap, fanoutPace)
	}
}

// TestFanoutLines_HandDoesNotWaitForAQueuedRound: the delivery loop's
// fan-outs return while their round waits behind a running one, and the
// round runs later with them in order.
func TestFanoutLines_HandDoesNotWaitForAQueuedRound(t *testing.T) {
	var l fanoutLines
	var mu sync.Mutex
	var rounds []string
	started, release := make(chan struct{}), make(chan struct{})
	run := func(frames []byte, ids []string, _ string, _ audience) int {
		mu.Lock()
		rounds = append(rounds, string(frames))
		mu.Unlock()
		if ids[0] == "a" {
			close(started)
			<-release
		}
		return 1
	}
	go l.hand("a", []byte("a"), "g", audience{}, run)
	<-started
	handed := make(chan struct{})
	go func() {
		defer close(handed)
		l.hand("b", []byte("b"), "g", audience{}, run)
		l.hand("c", []byte("c"), "g", audience{}, run)
	}()
	select {
	case <-handed:
	case <-time.After(5 * time.Second):
		t.Fatal("hand waited for the round queued behind a running one")
	}
	close(release)
	poll.Until(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(rounds) != "[a bc]" {
			return fmt.Errorf("rounds %v, want [a bc]", rounds)
		}
		return nil
	})
}

// TestFanoutLines_FrameOfTheCallerIsNotWrittenTo: a frame that joins a
// round never writes into the spare capacity of the buffer of the frame
// that opened the round, which its caller still owns.
func TestFanoutLines_FrameOfTheCallerIsNotWrittenTo(t *testing.T) {
	var l fanoutLines
	opener := make([]byte, 1, 64)
	opener[0] = 'b'
	started, release := make(chan struct{}), make(chan struct{})
	run := func(frames []byte, ids []string, _ string, _ audience) int {
		if ids[0] == "a" {
			close(started)
			<-release
		}
		return 1
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.fanout("a", []byte("a"), "g", audience{}, run)
	}()
	<-started
	second := make(chan struct{})
	go func() {
		defer close(second)
		l.fanout("b", opener, "g", audience{}, run)
	}()
	poll.Until(t, 5*time.Second, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if line := l.lines[fanoutKey("g", audience{})]; line == nil || line.open == nil {
			return fmt.Errorf("b not queued")
		}
		return nil
	})
	// A third joins the waiting round b opened, appending to b's frames.
	third := make(chan struct{})
	go func() {
		defer close(third)
		l.fanout("c", []byte("c"), "g", audience{}, run)
	}()
	poll.Until(t, 5*time.Second, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if line := l.lines[fanoutKey("g", audience{})]; line == nil || line.open == nil || len(line.open.ids) != 2 {
			return fmt.Errorf("c not queued")
		}
		return nil
	})
	if spare := opener[:2]; spare[1] != 0 {
		t.Fatalf("a later frame was written into the opening caller's buffer: %q", spare)
	}
	close(release)
	<-done
	<-second
	<-third
}

// TestFanoutLines_MergedRoundReachesEachSessionInOneWrite: frames merged
// into one round reach every member in order, in one write, and count
// against the queue cap one by one: a session with room for fewer is cut
// as a slow consumer while the others get them all.
func TestFanoutLines_MergedRoundReachesEachSessionInOneWrite(t *testing.T) {
	cfg := testConfig()
	cfg.QueueFrames = 4
	n := newIdleNode(t, cfg) // the test flushes
	full, fullSink := openSink(t, n, "full", false)
	var sinks []*sinkTransport
	for i := range 3 {
		_, st := openSink(t, n, fmt.Sprint("member-", i), true)
		sinks = append(sinks, st)
	}
	for _, f := range n.hub.flushers {
		f.pass(nil, nil) // the handshakes' replies
	}
	full.send(wire.AppendPush(nil, &wire.Push{ID: "waiting"})) // one of its four places taken
	for _, st := range sinks {
		st.mu.Lock()
		st.data = nil
		st.mu.Unlock()
		st.writes.Store(0)
	}
	var frames []byte
	var ids []string
	for i := range 4 {
		id := fmt.Sprint("m", i)
		frames = wire.AppendPush(frames, &wire.Push{ID: id, Payload: []byte("to everyone")})
		ids = append(ids, id)
	}
	if got := n.fanoutRound(frames, ids, "", audience{}); got != 4 {
		t.Fatalf("the round reached %d sessions, want 4", got)
	}
	if closed, reason := fullSink.isClosed(); !closed || reason != closeSlow {
		t.Fatalf("the session with room for 3 of 4 frames: closed=%v reason=%v, want slow_consumer", closed, reason)
	}
	for _, f := range n.hub.flushers {
		f.pass(nil, nil)
	}
	for i, st := range sinks {
		if w := st.writes.Load(); w != 1 {
			t.Errorf("member-%d: %d writes, want 1", i, w)
		}
		var got []string
		for _, f := range st.frames() {
			if p, ok := f.(*wire.Push); ok {
				got = append(got, p.ID)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(ids) {
			t.Errorf("member-%d got %v, want %v", i, got, ids)
		}
	}
}
