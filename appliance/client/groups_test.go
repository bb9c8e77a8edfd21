package client

import (
	"testing"

	"github.com/pushd/pushd/appliance/wire"
)

// A group cursor moves over runs without holes only: messages of one
// group pushed through different nodes may arrive out of order, and a
// cursor past a message the device never got would make the next
// catch-up skip it.
func TestGroupCursors_MoveOverRunsWithoutHoles(t *testing.T) {
	g := newGroupCursors(nil)
	step := func(seq uint64, moved bool, want uint64) {
		t.Helper()
		c, ok := g.received("room", "g1", seq)
		if ok != moved || (ok && c.Seq != want) || g.m["room"].Seq != want {
			t.Fatalf("after seq %d: cursor %+v (moved %v), want %d (moved %v)", seq, g.m["room"].GroupCursor, ok, want, moved)
		}
	}
	step(5, true, 5) // a first message starts the cursor
	step(7, false, 5)
	step(8, false, 5)
	step(6, true, 8) // the hole closes: 6, 7, 8
	step(8, false, 8)
	step(3, false, 8)
	// A new epoch (the stream was started anew) starts over.
	if c, ok := g.received("room", "g2", 1); !ok || c != (GroupCursor{Group: "room", Epoch: "g2", Seq: 1}) {
		t.Fatalf("new epoch: %+v %v", c, ok)
	}
}

// A hole that never fills (a message the server filtered out for this
// device) is given up on once maxAhead later seqs arrived.
func TestGroupCursors_AHoleIsGivenUpOnPastMaxAhead(t *testing.T) {
	g := newGroupCursors([]GroupCursor{{Group: "room", Epoch: "g1", Seq: 10}})
	for s := uint64(12); s < 12+maxAhead; s++ {
		if _, ok := g.received("room", "g1", s); ok {
			t.Fatalf("moved at %d, with 11 missing and %d ahead", s, s-11)
		}
	}
	c, ok := g.received("room", "g1", 12+maxAhead)
	if !ok || c.Seq != 12+maxAhead {
		t.Fatalf("past maxAhead: %+v %v, want the cursor at %d", c, ok, 12+maxAhead)
	}
}

// CATCHUP settles a group's cursor, drops what is ahead of it and below,
// and HELLO carries at most 64 cursors, the most recently moved.
func TestGroupCursors_CatchUpAndHello(t *testing.T) {
	g := newGroupCursors(nil)
	g.received("room", "g1", 1)
	g.received("room", "g1", 4)
	g.received("room", "g1", 9)
	if c := g.caughtUp(&wire.CatchUp{Group: "room", Epoch: "g1", Seq: 6, Recovered: true}); c.Seq != 6 {
		t.Fatalf("after CATCHUP at 6: %+v", c)
	}
	if _, ok := g.received("room", "g1", 7); !ok || g.m["room"].Seq != 7 {
		t.Fatalf("7 after the catch-up: %+v", g.m["room"].GroupCursor)
	}
	for i := range 70 {
		g.received(string(rune('a'+i/26))+string(rune('a'+i%26)), "e", 1)
	}
	h := g.hello()
	if len(h) != maxGroupCursors || h[0].Group != "cr" {
		t.Fatalf("HELLO carries %d cursors, first %+v", len(h), h[0])
	}
	for _, c := range h {
		if c.Group == "room" {
			t.Fatal("HELLO kept the least recently moved cursor over newer ones")
		}
	}
}
