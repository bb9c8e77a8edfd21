package client

import (
	"fmt"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
)

func TestIDWindow_EvictsOldest(t *testing.T) {
	w := newIDWindow(2)
	for _, id := range []string{"a", "b", "c"} {
		if !w.add(id) {
			t.Fatalf("add(%q) on first sight = false", id)
		}
	}
	if w.add("c") || w.add("b") {
		t.Error("a recent id was not a repeat")
	}
	if !w.add("a") {
		t.Error("an evicted id is still a repeat")
	}
}

func TestIDWindow_EmptyIDIsNeverARepeat(t *testing.T) {
	w := newIDWindow(4)
	for i := range 3 {
		if !w.add("") {
			t.Fatalf("empty id counted as a repeat on add %d", i+1)
		}
	}
	if !w.add("x") || w.add("x") {
		t.Error("ids after empty ones are not deduped")
	}
}

// TestClient_DedupesRedeliveredID: a message seen again by id (seq 0, so
// the cursor cannot catch it) or by seq is handed over once; messages
// without an id are all handed over.
func TestClient_DedupesRedeliveredID(t *testing.T) {
	srv := newFakeServer(t)
	var rec recorder
	cfg := testConfig(srv)
	cfg.OnMessage = func(m Message) { rec.add("msg %d %s %s", m.Seq, m.ID, m.Payload) }
	cfg.OnDrop = func(m Message, why DropReason) { rec.add("drop %d %s %s", m.Seq, m.ID, why) }
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)
	sc := srv.next(t)
	sc.welcome(t, &wire.Welcome{Session: "s1", Heartbeat: 10_000, Recovered: true, Epoch: "e1"})
	sc.mustSend(t,
		&wire.Push{ID: "g1", Group: "room", Payload: []byte("a")},
		&wire.Push{ID: "g1", Group: "room", Payload: []byte("a"), Redelivery: true},
		&wire.Push{Payload: []byte("anon1")},
		&wire.Push{Payload: []byte("anon2")},
		&wire.Push{Seq: 1, ID: "m1", Payload: []byte("b")},
	)
	sc.mustSend(t, &wire.Push{Seq: 1, ID: "m1", Payload: []byte("b"), Redelivery: true})
	sc.mustSend(t, &wire.Push{Seq: 2, ID: "m1", Payload: []byte("c")}) // same id by another path
	if a := expect[*wire.Ack](t, sc); a.Seq != 1 {
		t.Fatalf("first ack %d, want 1", a.Seq)
	}
	if a := expect[*wire.Ack](t, sc); a.Seq != 1 {
		t.Fatalf("ack of the repeat %d, want 1 again", a.Seq)
	}
	if a := expect[*wire.Ack](t, sc); a.Seq != 2 {
		t.Fatalf("ack of the repeated id %d, want 2", a.Seq)
	}
	want := []string{"msg 0 g1 a", "drop 0 g1 repeat", "msg 0  anon1", "msg 0  anon2", "msg 1 m1 b", "drop 1 m1 repeat", "drop 2 m1 repeat"}
	poll.Until(t, 5*time.Second, func() error {
		if got := rec.events(); fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("events %q, want %q", got, want)
		}
		return nil
	})
}
