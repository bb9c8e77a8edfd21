package appliance

import (
	"sync"
	"time"
)

// wheel is a hashed timing wheel. It replaces a timer per connection: each
// session has at most one pending check in one wheel, at its earliest
// deadline (handshake, idle, retransmit), and re-arms itself from the
// check. A wheel costs one goroutine and one ticker however many sessions
// it holds.
//
// A session's check is the pair (session, due tick); the session remembers
// its due tick in wheelDue (guarded by wheel.mu), so re-arming earlier
// leaves a stale entry behind that is dropped when its slot comes round.
type wheel struct {
	tick  time.Duration
	start time.Time

	mu    sync.Mutex
	slots [][]*session
	next  int64 // the next tick to process
}

const wheelSlots = 1024

func newWheel(tick time.Duration, now time.Time) *wheel {
	return &wheel{tick: tick, start: now, slots: make([][]*session, wheelSlots)}
}

// tickOf returns the tick at or after t.
func (w *wheel) tickOf(t time.Time) int64 {
	d := t.Sub(w.start)
	if d <= 0 {
		return 0
	}
	return int64((d + w.tick - 1) / w.tick)
}

// schedule arms s's check for deadline unless an earlier or equal check is
// already armed.
func (w *wheel) schedule(s *session, deadline time.Time) {
	due := w.tickOf(deadline)
	w.mu.Lock()
	if due < w.next {
		due = w.next
	}
	if s.wheelDue == 0 || due < s.wheelDue {
		s.wheelDue = due
		slot := &w.slots[due%wheelSlots]
		*slot = append(*slot, s)
	}
	w.mu.Unlock()
}

// advance fires every check due up to now and returns the sessions to
// call, in firing order. Callers run the checks outside the wheel's lock.
func (w *wheel) advance(now time.Time, fired []*session) []*session {
	last := int64(now.Sub(w.start) / w.tick)
	w.mu.Lock()
	for ; w.next <= last; w.next++ {
		t := w.next
		slot := w.slots[t%wheelSlots]
		keep := slot[:0]
		for _, s := range slot {
			switch {
			case s.wheelDue == t:
				s.wheelDue = 0
				fired = append(fired, s)
			case s.wheelDue > t && s.wheelDue%wheelSlots == t%wheelSlots:
				keep = append(keep, s) // due in a later revolution
			}
		}
		clear(slot[len(keep):])
		w.slots[t%wheelSlots] = keep
	}
	w.mu.Unlock()
	return fired
}
