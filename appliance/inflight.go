package appliance

import (
	"time"

	"github.com/pushd/pushd/appliance/wire"
)

// inflight is a session's delivery state. Inbox sequence numbers are
// contiguous per device, so the session sends strictly in order: entry
// sent+1 goes out when the window has room, anything later waits in the
// inbox and is fetched once the gap or the window allows. Cumulative acks
// therefore never skip a message still on its way.
//
// All fields are guarded by session.mu.
type inflight struct {
	epoch   string      // inbox epoch this connection delivers from
	acked   uint64      // highest seq the device acknowledged
	sent    uint64      // highest seq sent on this connection
	window  []sentFrame // unacked frames in seq order, at most Config.Window
	retryAt time.Time   // when the oldest unacked frame is resent; zero when window is empty
	backoff time.Duration

	// behind is set when entries after sent may wait in the inbox: the
	// window was full, a later seq arrived first, or a delivery came while
	// the session was opening. fetching is set while a read is queued or
	// running; a delivery that finds the session behind during a fetch
	// leaves behind set so the fetcher reads again.
	behind   bool
	fetching bool

	// gapNext marks the next PUSH sent with FlagGap: the send position
	// jumped past seqs the inbox no longer holds.
	gapNext bool
	// fastRetry is when a duplicate ack last triggered a retransmit.
	fastRetry time.Time
}

// sentFrame is an encoded PUSH kept until acked, for retransmission.
type sentFrame struct {
	seq   uint64
	frame []byte
}

// offer is one inbox entry offered to the session: from a live delivery, a
// replay or a fetch. frame is its encoded PUSH; the session copies it.
// An offer read from the inbox itself (replay, fetch) is authoritative: a
// seq missing before it is gone from the inbox (expired or trimmed), so
// the session jumps over it and flags the jump; a live offer that skips
// ahead only means an earlier one is still on its way.
type offer struct {
	epoch         string
	seq           uint64
	frame         []byte
	authoritative bool
	priority      wire.Priority // for the degrade policy
	business      string
}

// offerResult says what a session did with an offer.
type offerResult uint8

const (
	offerSent     offerResult = iota // queued to the device
	offerHeld                        // stays in the inbox for a later fetch
	offerStale                       // already sent or acked
	offerShed                        // dropped by the degrade policy; the device sees a flagged gap
	offerRejected                    // session closing, or the inbox epoch changed
)

// deliver offers inbox entries in order and returns what happened to the
// last one. The caller encodes each PUSH; one lock round covers them all.
func (s *session) deliver(offers []offer) offerResult {
	res := offerRejected
	var resync, slow, fetch bool
	s.mu.Lock()
	for _, o := range offers {
		res, resync, slow = s.offerLocked(o)
		if resync || slow {
			break
		}
	}
	fetch = s.needsFetchLocked()
	s.mu.Unlock()
	switch {
	case resync:
		s.closeWith(closeResync, &wire.Control{Kind: wire.ControlResync, Reason: "the inbox lost continuity; reconnect to resume"})
	case slow:
		s.closeSlow()
	case fetch:
		s.node.durable.requestFetch(s)
	}
	return res
}

// offerLocked applies one offer. Lock must be held.
func (s *session) offerLocked(o offer) (res offerResult, resync, slow bool) {
	switch {
	case s.closing || s.state == stateClosed:
		return offerRejected, false, false
	case s.state != stateOpen:
		s.behind = true // fetched once WELCOME is out
		return offerHeld, false, false
	case o.epoch != s.epoch:
		return offerRejected, true, false
	case o.seq <= s.sent:
		return offerStale, false, false
	case len(s.window) >= s.node.tun.Load().window, o.seq != s.sent+1 && !o.authoritative:
		s.behind = true
		return offerHeld, false, false
	case s.node.degrade.Load().sheds(o.priority, o.business):
		// Shed while the region degrades: not sent, and the next message
		// tells the device about the jump. Its ack of a later seq trims
		// this one from the inbox.
		s.sent, s.gapNext = o.seq, true
		s.node.metrics.degradeShed.Inc()
		return offerShed, false, false
	case !s.takes(o.business):
		// A business this connection did not declare: skipped like a
		// shed message, since the device's cumulative ack cannot leave it
		// behind for a later connection that declares it.
		s.sent, s.gapNext = o.seq, true
		s.node.metrics.businessSkipped.Inc()
		return offerShed, false, false
	}
	frame := append([]byte(nil), o.frame...)
	if o.seq != s.sent+1 || s.gapNext {
		wire.SetPushFlag(frame, wire.FlagGap, true)
	}
	if !s.enqueueLocked(frame) {
		return offerRejected, false, true
	}
	s.sent, s.gapNext = o.seq, false
	s.window = append(s.window, sentFrame{seq: o.seq, frame: frame})
	if len(s.window) == 1 {
		s.backoff = s.node.tun.Load().ackTimeout
		s.retryAt = time.Now().Add(s.backoff)
		s.wheel.schedule(s, s.retryAt)
	}
	return offerSent, false, false
}

// needsFetchLocked claims the fetch when the session is behind with room in
// its window and no fetch running. Lock must be held.
func (s *session) needsFetchLocked() bool {
	if !s.behind || s.fetching || s.state != stateOpen || s.closing || len(s.window) >= s.node.tun.Load().window {
		return false
	}
	s.behind, s.fetching = false, true
	return true
}

// markBehind marks an open session as possibly behind its inbox and
// reports whether the caller should queue its fetch now; with a full
// window or a fetch running, the next ack or fetch reads it.
func (s *session) markBehind() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateOpen || s.closing {
		return false
	}
	s.behind = true
	return s.needsFetchLocked()
}

// fetchWant returns what the fetcher should read for s: entries after
// sent, as many as the window has room for.
func (s *session) fetchWant() (device, epoch string, after uint64, limit int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateOpen || s.closing {
		s.fetching = false
		return "", "", 0, 0, false
	}
	return s.key, s.epoch, s.sent, s.node.tun.Load().window - len(s.window), true
}

// fetched ends a fetch: offers what was read, and when the read filled the
// window's room, marks the session behind so the next ack fetches again.
func (s *session) fetched(offers []offer, full bool) {
	s.mu.Lock()
	s.fetching = false
	if full {
		s.behind = true
	}
	s.mu.Unlock()
	s.deliver(offers)
}

// sendEphemeral queues a PUSH that is in no inbox (group, broadcast, or a
// push accepted while Redis is unreachable): it is not tracked, acked or
// retransmitted. Reports whether it was queued.
func (s *session) sendEphemeral(frame []byte) bool {
	s.mu.Lock()
	if s.state != stateOpen || s.closing {
		s.mu.Unlock()
		return false
	}
	ok := s.enqueueLocked(frame)
	s.mu.Unlock()
	if !ok {
		s.closeSlow()
	}
	return ok
}

// onAck applies a cumulative ack from the device.
func (s *session) onAck(seq uint64) {
	n := s.node
	s.mu.Lock()
	if seq > s.sent {
		s.mu.Unlock()
		s.protocolError("ACK for a sequence number never sent on this connection")
		return
	}
	if seq <= s.acked {
		// A repeated ack while frames are in flight is the device saying
		// it saw a seq jump it cannot accept (a frame lost on the way):
		// retransmit now rather than at the ack timeout, at most once per
		// quarter timeout.
		now := time.Now()
		fast := seq == s.acked && len(s.window) > 0 && now.Sub(s.fastRetry) >= n.tun.Load().ackTimeout/4
		if fast {
			s.fastRetry, s.retryAt = now, now
		}
		s.mu.Unlock()
		if fast {
			s.retransmit(now)
		}
		return
	}
	s.acked = seq
	k := 0
	for k < len(s.window) && s.window[k].seq <= seq {
		k++
	}
	clear(s.window[:k])
	s.window = s.window[k:]
	if len(s.window) == 0 {
		s.window = nil
		s.retryAt = time.Time{}
	} else {
		s.backoff = n.tun.Load().ackTimeout
		s.retryAt = time.Now().Add(s.backoff)
	}
	key, epoch := s.key, s.epoch
	fetch := s.needsFetchLocked()
	s.mu.Unlock()
	n.durable.queueAck(key, epoch, seq)
	if fetch {
		n.durable.requestFetch(s)
	}
}

// retransmit resends every unacked frame when the oldest is overdue, with
// the timeout doubling up to AckBackoffMax, and returns when the next
// retransmit is due (zero when nothing is in flight).
func (s *session) retransmit(now time.Time) time.Time {
	n := s.node
	s.mu.Lock()
	if len(s.window) == 0 || now.Before(s.retryAt) {
		at := s.retryAt
		s.mu.Unlock()
		return at
	}
	ok := true
	for _, f := range s.window {
		wire.SetPushFlag(f.frame, wire.FlagRedelivery, true)
		if ok = s.enqueueLocked(f.frame); !ok {
			break
		}
	}
	s.backoff = min(2*s.backoff, n.tun.Load().ackBackoffMax)
	s.retryAt = now.Add(s.backoff)
	at := s.retryAt
	resent := len(s.window)
	s.mu.Unlock()
	if !ok {
		s.closeSlow()
		return time.Time{}
	}
	n.metrics.retransmits.Add(float64(resent))
	return at
}
