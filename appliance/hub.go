package appliance

import (
	"hash/maphash"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// hub is the sharded session registry: device → session, and each group's
// members, split over many small locks so registration, lookup and
// fan-out on one shard never wait for another. Each shard also keeps the
// list of its sessions with output pending, which its flusher drains.
type hub struct {
	shards   []*shard
	flushers []*flusher
	seed     maphash.Seed
	count    atomic.Int64 // registered sessions
}

// shard is one slice of the registry.
type shard struct {
	mu      sync.RWMutex
	devices map[string]*session
	groups  map[string]map[*session]struct{}

	// dirty and bulk are the sessions with output to write: frames that
	// go out at the next pass, and fan-out and catch-up frames, which the
	// flusher writes in chunks after the others.
	dirtyMu sync.Mutex
	dirty   []*session
	bulk    []*session
	flusher *flusher
}

// dirtyClass says which of its shard's lists a session is queued on.
type dirtyClass uint8

const (
	dirtyUrgent dirtyClass = 1 << iota
	dirtyBulk
)

// flusher writes the pending output of the sessions of the shards it owns.
// Frames queued while it writes, or within FlushInterval of its last
// pass, are merged into the next pass: one write per connection per tick.
// Fan-out is written in chunks of bulkChunk sessions, and output queued
// for a device in between (a unicast push, a PONG) goes out before the
// next chunk, so a broadcast to every session never holds the rest up by
// more than a chunk's writes.
type flusher struct {
	wake     chan struct{}
	shards   []*shard
	interval time.Duration
	urgent   atomic.Bool // a session was queued on a dirty list since the last look
	// bytes counts what the flusher wrote, once a pass: the node sets it
	// to pushd_device_bytes_out_total once its metrics exist.
	bytes prometheus.Counter
}

// bulkChunk is the sessions of fan-out a flusher writes between two looks
// at the urgent output: a fraction of a millisecond of writes.
const bulkChunk = 32

func newHub(shards int, flushInterval time.Duration) *hub {
	h := &hub{seed: maphash.MakeSeed()}
	nf := min(runtime.GOMAXPROCS(0), shards)
	for i := 0; i < nf; i++ {
		h.flushers = append(h.flushers, &flusher{wake: make(chan struct{}, 1), interval: flushInterval})
	}
	for i := 0; i < shards; i++ {
		f := h.flushers[i%nf]
		sh := &shard{devices: map[string]*session{}, groups: map[string]map[*session]struct{}{}, flusher: f}
		f.shards = append(f.shards, sh)
		h.shards = append(h.shards, sh)
	}
	return h
}

func (h *hub) shardFor(key string) *shard {
	return h.shards[maphash.String(h.seed, key)%uint64(len(h.shards))]
}

// register makes s the live session of its device and a member of its
// app's broadcast group, and returns the session it replaced, if any, for
// the caller to kick.
func (h *hub) register(s *session) *session {
	sh := s.shard
	sh.mu.Lock()
	prev := sh.devices[s.key]
	sh.devices[s.key] = s
	sh.joinLocked(broadcastGroup(s.app), s)
	sh.mu.Unlock()
	if prev == nil {
		h.count.Add(1)
	}
	return prev
}

// unregister removes s and its group memberships, unless a newer session
// of the device has already replaced it.
func (h *hub) unregister(s *session) {
	s.mu.Lock()
	groups := s.groups
	s.groups = nil
	s.mu.Unlock()
	sh := s.shard
	sh.mu.Lock()
	if sh.devices[s.key] == s {
		delete(sh.devices, s.key)
		h.count.Add(-1)
	}
	sh.leaveLocked(broadcastGroup(s.app), s)
	for _, g := range groups {
		sh.leaveLocked(g.key, s)
	}
	sh.mu.Unlock()
}

// groupKey names an app's group in the registry; groups of different apps
// never mix.
func groupKey(app, group string) string { return app + "/" + group }

// broadcastGroup is the registry group every session of app belongs to.
func broadcastGroup(app string) string { return app + "/" }

// lookup returns the live session of an inbox key (app/device), or nil.
func (h *hub) lookup(key string) *session {
	sh := h.shardFor(key)
	sh.mu.RLock()
	s := sh.devices[key]
	sh.mu.RUnlock()
	return s
}

// join makes s a member of group (a group key) by way of via. ok is
// false, and nothing changes, when via is viaJoin and s has joined
// maxJoins groups itself already, or s is not open; added says s was not
// in the group before, by any way. A session is in a group's registry
// while any way holds it there.
func (h *hub) join(s *session, group string, via memberVia, maxJoins int) (ok, added bool) {
	sh := s.shard
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateOpen || s.closing {
		return false, false
	}
	joins := 0
	for i := range s.groups {
		g := &s.groups[i]
		if g.key == group {
			if via == viaJoin && g.via&viaJoin == 0 && joinsOf(s.groups) >= maxJoins {
				return false, false
			}
			g.via |= via
			return true, false
		}
		if g.via&viaJoin != 0 {
			joins++
		}
	}
	if via == viaJoin && joins >= maxJoins {
		return false, false
	}
	s.groups = append(s.groups, membership{key: group, via: via})
	sh.joinLocked(group, s)
	return true, true
}

// joinsOf counts the groups a session joined itself.
func joinsOf(groups []membership) int {
	k := 0
	for _, g := range groups {
		if g.via&viaJoin != 0 {
			k++
		}
	}
	return k
}

// joinLocked adds s to group. Lock must be held.
func (sh *shard) joinLocked(group string, s *session) {
	members := sh.groups[group]
	if members == nil {
		members = map[*session]struct{}{}
		sh.groups[group] = members
	}
	members[s] = struct{}{}
}

// leave drops via from s's membership of group, and takes s out of the
// group's registry when no way holds it there any more.
func (h *hub) leave(s *session, group string, via memberVia) {
	sh := s.shard
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s.mu.Lock()
	gone := false
	for i := range s.groups {
		if g := &s.groups[i]; g.key == group {
			if g.via &^= via; g.via == 0 {
				s.groups = append(s.groups[:i], s.groups[i+1:]...)
				gone = true
			}
			break
		}
	}
	s.mu.Unlock()
	if gone {
		sh.leaveLocked(group, s)
	}
}

// leaveLocked removes s from group. Lock must be held.
func (sh *shard) leaveLocked(group string, s *session) {
	if members := sh.groups[group]; members != nil {
		delete(members, s)
		if len(members) == 0 {
			delete(sh.groups, group)
		}
	}
}

// fanout hands count encoded frames, concatenated, to every session of
// group (a group key), or to every session when group is empty, shard by
// shard in parallel. The frames are encoded once by the caller; each
// recipient's queue gets a copy of the same bytes. It returns the number
// of recipients.
func (h *hub) fanout(frames []byte, count int, group string, aud audience) int {
	workers := min(runtime.GOMAXPROCS(0), len(h.shards))
	var total atomic.Int64
	var wg sync.WaitGroup
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go func(w int) {
			defer wg.Done()
			var slow []*session
			sent := 0
			for i := w; i < len(h.shards); i += workers {
				var k int
				k, slow = h.shards[i].fanout(frames, count, group, aud, slow)
				sent += k
				// Between shards, let the goroutines waiting for a core
				// (a unicast push's handler, a poller) have it, rather
				// than only at the scheduler's 10 ms preemption.
				runtime.Gosched()
			}
			total.Add(int64(sent))
			for _, s := range slow {
				s.closeSlow()
			}
		}(w)
	}
	wg.Wait()
	return int(total.Load())
}

// fanout queues count frames to the shard's recipients in the audience
// and appends those over their queue caps to slow, to be closed once the
// shard lock is released. It returns the recipients.
func (sh *shard) fanout(frames []byte, count int, group string, aud audience, slow []*session) (int, []*session) {
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	all := aud.everyone()
	sent := 0
	give := func(s *session) {
		if !all && !aud.admits(s) {
			return
		}
		sent++
		s.mu.Lock()
		ok := s.queueLocked(frames, count, dirtyBulk)
		s.mu.Unlock()
		if !ok {
			slow = append(slow, s)
		}
	}
	if group == "" {
		for _, s := range sh.devices {
			give(s)
		}
	} else {
		for s := range sh.groups[group] {
			give(s)
		}
	}
	return sent, slow
}

// markDirty queues s for the shard's flusher on the list of class. The
// session's lock is held by the caller (it sets s.dirty in the same
// step).
func (sh *shard) markDirty(s *session, class dirtyClass) {
	sh.dirtyMu.Lock()
	var first bool
	if class == dirtyBulk {
		first = len(sh.bulk) == 0
		sh.bulk = append(sh.bulk, s)
	} else {
		first = len(sh.dirty) == 0
		sh.dirty = append(sh.dirty, s)
	}
	sh.dirtyMu.Unlock()
	if class == dirtyUrgent {
		sh.flusher.urgent.Store(true)
	}
	if first {
		select {
		case sh.flusher.wake <- struct{}{}:
		default:
		}
	}
}

// run flushes until stop is closed, then flushes once more so nothing
// queued before shutdown is left behind.
func (f *flusher) run(stop <-chan struct{}) {
	var urgent, bulk []*session
	var last time.Time
	for {
		select {
		case <-stop:
			f.pass(urgent[:0], bulk[:0])
			return
		case <-f.wake:
		}
		if wait := f.interval - time.Since(last); wait > 0 {
			time.Sleep(wait)
		}
		last = time.Now()
		urgent, bulk = f.pass(urgent[:0], bulk[:0])
	}
}

// pass flushes every session queued on the flusher's shards once: those
// on the dirty lists first, then those on the bulk lists, bulkChunk at a
// time, flushing the dirty lists again whenever a session was queued on
// one meanwhile. It returns its buffers for the next pass.
func (f *flusher) pass(urgent, bulk []*session) ([]*session, []*session) {
	written := f.flushUrgent(urgent)
	for _, sh := range f.shards {
		sh.dirtyMu.Lock()
		bulk = append(bulk, sh.bulk...)
		clear(sh.bulk)
		sh.bulk = sh.bulk[:0]
		sh.dirtyMu.Unlock()
	}
	for i, s := range bulk {
		written += s.flush()
		if (i+1)%bulkChunk == 0 {
			if f.urgent.Load() {
				written += f.flushUrgent(urgent)
			}
			// As between a fan-out's shards: the rest of the node gets
			// a core between chunks.
			runtime.Gosched()
		}
	}
	clear(bulk)
	f.bytes.Add(float64(written))
	return urgent, bulk
}

// flushUrgent flushes the sessions on the dirty lists of the flusher's
// shards, in batch (returned emptied), and returns the bytes written.
func (f *flusher) flushUrgent(batch []*session) int {
	f.urgent.Store(false)
	for _, sh := range f.shards {
		sh.dirtyMu.Lock()
		batch = append(batch, sh.dirty...)
		clear(sh.dirty)
		sh.dirty = sh.dirty[:0]
		sh.dirtyMu.Unlock()
	}
	written := 0
	for _, s := range batch {
		written += s.flush()
	}
	clear(batch)
	return written
}

// each calls f for every registered session, shard by shard, outside the
// shard locks.
func (h *hub) each(f func(*session)) {
	var list []*session
	for _, sh := range h.shards {
		sh.mu.RLock()
		list = list[:0]
		for _, s := range sh.devices {
			list = append(list, s)
		}
		sh.mu.RUnlock()
		for _, s := range list {
			f(s)
		}
	}
}
