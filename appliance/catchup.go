package appliance

import (
	"context"
	"strings"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/streams"
)

// Group catch-up: a session that offered CapGroupCursors and becomes a
// member of a group that keeps a catch-up stream (at its open, on JOIN, or
// when the business adds it) is sent what the stream holds after the
// device's cursor for that group, then a CATCHUP frame saying where that
// left it and whether anything was lost. The reads run on the catch-up
// loop, many sessions per pipeline, in chunks that fit the session's
// output queue: a catch-up never makes a session a slow consumer.

const (
	// catchUpChunk is the most entries one read takes from one group's
	// stream for one session.
	catchUpChunk = 32
	// catchUpBatch is the most reads in one pipeline.
	catchUpBatch = 256
	// catchUpPause is how long a session whose queue was full waits
	// before its catch-up goes on: a few flush ticks.
	catchUpPause = 5 * time.Millisecond
)

// catchUp is one session's catch-up in one group.
type catchUp struct {
	s     *session
	group string // group key (app/group)
	// epoch and after are the cursor to read on from; epoch is "" for a
	// device without one.
	epoch string
	after uint64
	// lost is set once a chunk read so far could not prove continuity.
	lost bool
}

// queueCatchUp has s catch up in group (a group key) from the cursor its
// HELLO gave for it, if s offered CapGroupCursors: only such a device
// reads CATCHUP frames. It never blocks.
func (n *Node) queueCatchUp(s *session, group string) {
	if n.durable == nil {
		return
	}
	s.mu.Lock()
	if s.caps&wire.CapGroupCursors == 0 {
		s.mu.Unlock()
		return
	}
	name := strings.TrimPrefix(group, s.app+"/")
	job := catchUp{s: s, group: group}
	for _, c := range s.cursors {
		if c.Group == name {
			job.epoch, job.after = c.Epoch, c.Seq
			break
		}
	}
	s.mu.Unlock()
	d := n.durable
	d.catchMu.Lock()
	d.catchList = append(d.catchList, job)
	d.catchMu.Unlock()
	select {
	case d.catchWake <- struct{}{}:
	default:
	}
}

// catchUpLoop runs the queued catch-ups, chunk by chunk.
func (d *durable) catchUpLoop() {
	n := d.node
	var list, later []catchUp
	pause := time.NewTimer(time.Hour)
	pause.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-d.catchWake:
		case <-pause.C:
		}
		d.catchMu.Lock()
		list, d.catchList = append(list[:0], d.catchList...), d.catchList[:0]
		d.catchMu.Unlock()
		list = append(list, later...)
		later = later[:0]
		for len(list) > 0 {
			k := min(len(list), catchUpBatch)
			later = n.durable.catchUp(list[:k], later)
			list = list[k:]
		}
		if len(later) > 0 {
			pause.Reset(catchUpPause)
		}
	}
}

// catchUp reads one chunk of each job and sends it, and returns later with
// the jobs that have more to read appended.
func (d *durable) catchUp(jobs, later []catchUp) []catchUp {
	n := d.node
	reads := make([]streams.GroupRead, 0, len(jobs))
	live := jobs[:0:0]
	for _, j := range jobs {
		if !j.s.isOpen() {
			continue
		}
		reads = append(reads, streams.GroupRead{Group: j.group, Epoch: j.epoch, After: j.after, Limit: catchUpChunk})
		live = append(live, j)
	}
	if len(reads) == 0 {
		return later
	}
	ctx, cancel := context.WithTimeout(n.ctx, redisTimeout)
	res, err := d.store.ReadGroups(ctx, reads)
	cancel()
	n.durable.result(err)
	if err != nil {
		// Redis is down: try again after the pause; the members get
		// live messages meanwhile.
		return append(later, live...)
	}
	for i, j := range live {
		r := &res[i]
		if !r.On {
			continue // the group keeps no stream: nothing to catch up with
		}
		j.lost = j.lost || !r.Recovered
		name := strings.TrimPrefix(j.group, j.s.appID()+"/")
		full := false
		for k := range r.Entries {
			e := &r.Entries[k]
			switch j.s.sendIfRoom(groupEntryFrame(name, r.Epoch, e, j.s)) {
			case sendFull:
				// The queue is full for now: go on from this entry once it
				// has been written out.
				j.epoch, j.after, full = r.Epoch, e.Seq-1, true
			case sendClosed:
				full = true
				j.s = nil
			}
			if full {
				break
			}
		}
		switch {
		case j.s == nil:
		case full:
			later = append(later, j)
		case r.More:
			j.epoch, j.after = r.Epoch, r.Upto
			later = append(later, j)
		default:
			done := wire.Append(nil, &wire.CatchUp{Group: name, Recovered: !j.lost, Epoch: r.Epoch, Seq: r.Upto})
			if j.s.sendIfRoom(done) == sendFull {
				j.epoch, j.after = r.Epoch, r.Upto
				later = append(later, j)
			}
		}
	}
	return later
}

// groupEntryFrame encodes a stream entry as the PUSH its member gets, or
// returns nil when the entry is not for s (its business or filter).
func groupEntryFrame(group, epoch string, e *streams.GroupEntry, s *session) []byte {
	f, err := decodeFilter(e.Filter)
	if err != nil || !(audience{business: e.Business, filter: f}).admits(s) {
		return nil
	}
	p := wire.Push{ID: e.ID, Business: e.Business, Priority: wire.Priority(e.Priority), Created: uint64(e.Created.UnixMilli()),
		Group: group, Payload: e.Payload, GroupEpoch: epoch, GroupSeq: e.Seq}
	return wire.AppendPush(nil, &p)
}

// sendResult says what sendIfRoom did.
type sendResult uint8

const (
	sendQueued sendResult = iota
	sendFull              // the queue has no room for it now; nothing changed
	sendClosed            // the session is gone
)

// sendIfRoom queues frame when the session's output queue has room for it
// within its caps, and otherwise leaves the session as it is (unlike send,
// which closes it as a slow consumer). A nil frame is queued trivially.
func (s *session) sendIfRoom(frame []byte) sendResult {
	if frame == nil {
		return sendQueued
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateOpen || s.closing {
		return sendClosed
	}
	tun := s.node.tun.Load()
	used := 0
	if s.out != nil {
		used = len(*s.out) - outHead
	}
	if s.outFrames+1 > tun.queueFrames || used+len(frame) > tun.queueBytes {
		return sendFull
	}
	s.enqueueLocked(frame)
	return sendQueued
}
