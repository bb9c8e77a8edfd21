package client

import (
	"maps"
	"slices"

	"github.com/pushd/pushd/appliance/wire"
)

// GroupCursor is the device's position in a group's catch-up stream
// (docs/protocol.md §10.2): every message of the stream's Epoch up to Seq
// reached it, or was not for it. Persist the cursors OnGroupCursor hands
// over and pass them back in Config.GroupCursors after a restart; the
// server then replays what the device missed in those groups.
type GroupCursor struct {
	Group string
	Epoch string
	Seq   uint64
}

// CatchUp says where a group's catch-up left the device after it became a
// member of a group that keeps a stream (at connect, on Join, or when the
// business added it): the messages after its cursor came before, and
// Recovered is false when some may be lost (resync that group).
type CatchUp struct {
	Group     string
	Recovered bool
	Epoch     string
	Seq       uint64
}

// maxGroupCursors is the most cursors HELLO carries (the protocol's list
// bound); the client keeps that many, the most recently moved.
const maxGroupCursors = 64

// maxAhead bounds the seqs a group cursor holds above its contiguous
// prefix. Messages of one group pushed through different nodes can arrive
// out of order, so the cursor only moves over a run without holes; a hole
// that stays (a message the server filtered out for this device) is given
// up on once this many later seqs arrived, and the next catch-up settles
// it.
const maxAhead = 1024

// groupState is one group's cursor and the seqs received past it.
type groupState struct {
	GroupCursor
	ahead map[uint64]bool
	moved uint64 // when the cursor last moved, in cursor moves of the client
}

// groupCursors are the client's cursors by group. Guarded by Client.mu.
type groupCursors struct {
	m     map[string]*groupState
	moves uint64
}

func newGroupCursors(initial []GroupCursor) groupCursors {
	g := groupCursors{m: map[string]*groupState{}}
	for _, c := range initial {
		if c.Group != "" && c.Epoch != "" {
			g.moves++
			g.m[c.Group] = &groupState{GroupCursor: c, moved: g.moves}
		}
	}
	return g
}

// hello returns the cursors HELLO carries: the most recently moved, at
// most maxGroupCursors.
func (g *groupCursors) hello() []wire.GroupCursor {
	states := slices.SortedFunc(maps.Values(g.m), func(a, b *groupState) int { return int(b.moved) - int(a.moved) })
	if len(states) > maxGroupCursors {
		states = states[:maxGroupCursors]
	}
	out := make([]wire.GroupCursor, 0, len(states))
	for _, st := range states {
		out = append(out, wire.GroupCursor{Group: st.Group, Epoch: st.Epoch, Seq: st.Seq})
	}
	return out
}

// received notes a group message's position and returns the cursor when
// it moved.
func (g *groupCursors) received(group, epoch string, seq uint64) (GroupCursor, bool) {
	st := g.m[group]
	if st == nil || st.Epoch != epoch {
		// A first message of this stream (or of a new epoch of it): the
		// cursor starts here.
		st = &groupState{GroupCursor: GroupCursor{Group: group, Epoch: epoch, Seq: seq - 1}}
		g.m[group] = st
	}
	switch {
	case seq <= st.Seq:
		return GroupCursor{}, false
	case seq > st.Seq+1:
		if st.ahead == nil {
			st.ahead = map[uint64]bool{}
		}
		st.ahead[seq] = true
		if len(st.ahead) <= maxAhead {
			return GroupCursor{}, false
		}
		st.Seq = slices.Min(slices.Collect(maps.Keys(st.ahead))) - 1
	}
	st.Seq++
	for st.ahead[st.Seq+1] {
		delete(st.ahead, st.Seq+1)
		st.Seq++
	}
	delete(st.ahead, st.Seq)
	g.moves++
	st.moved = g.moves
	return st.GroupCursor, true
}

// caughtUp sets a group's cursor to where its catch-up left it.
func (g *groupCursors) caughtUp(c *wire.CatchUp) GroupCursor {
	st := g.m[c.Group]
	if st == nil || st.Epoch != c.Epoch {
		st = &groupState{}
		g.m[c.Group] = st
	}
	st.GroupCursor = GroupCursor{Group: c.Group, Epoch: c.Epoch, Seq: max(st.Seq, c.Seq)}
	for s := range st.ahead {
		if s <= st.Seq {
			delete(st.ahead, s)
		}
	}
	for st.ahead[st.Seq+1] {
		delete(st.ahead, st.Seq+1)
		st.Seq++
	}
	g.moves++
	st.moved = g.moves
	return st.GroupCursor
}
