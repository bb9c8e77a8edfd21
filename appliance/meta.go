package appliance

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/raftmeta"
)

// Meta is the region's Raft-replicated metadata as the runtime reads it;
// *raftmeta.Store implements it. With a Meta, apps, the degrade policy,
// tunables and membership come from it and Config.Apps is ignored.
type Meta interface {
	State() *raftmeta.State
	Changes() (<-chan struct{}, func())
	// Sync waits until State holds everything the region had committed
	// when Sync was called.
	Sync(ctx context.Context) error
}

// degradePolicy is the degrade state a node enforces; nil when off.
type degradePolicy struct {
	priority   wire.Priority // the highest priority shed
	businesses []string      // the businesses shed; empty: every business
	reason     string
	frame      []byte // the CONTROL degraded announcing it, encoded once
}

// restoredFrame is the CONTROL restored every session gets the same of.
var restoredFrame = wire.Append(nil, &wire.Control{Kind: wire.ControlRestored, Reason: "degradation over"})

// sheds reports whether a message of priority p for business b is shed:
// its priority is at or below the policy's, and its business is listed
// (or the policy lists none).
func (d *degradePolicy) sheds(p wire.Priority, b string) bool {
	if d == nil {
		return false
	}
	if p == 0 {
		p = wire.PriorityNormal
	}
	return p <= d.priority && (len(d.businesses) == 0 || slices.Contains(d.businesses, b))
}

// affects reports whether a connection that declared businesses (in its
// HELLO) may be sent messages the policy sheds, and so is told about it.
// A connection that declared none may carry any business.
func (d *degradePolicy) affects(businesses []string) bool {
	if d == nil {
		return false
	}
	if len(d.businesses) == 0 || len(businesses) == 0 {
		return true
	}
	for _, b := range businesses {
		if slices.Contains(d.businesses, b) {
			return true
		}
	}
	return false
}

func (d *degradePolicy) equal(o *degradePolicy) bool {
	if d == nil || o == nil {
		return d == o
	}
	return d.priority == o.priority && slices.Equal(d.businesses, o.businesses) && d.reason == o.reason
}

// describe says what the policy sheds, for error messages.
func (d *degradePolicy) describe() string {
	var s string
	switch d.priority {
	case wire.PriorityLow:
		s = "low-priority pushes"
	case wire.PriorityNormal:
		s = "low- and normal-priority pushes"
	default:
		s = "pushes of every priority"
	}
	if len(d.businesses) > 0 {
		s += " of " + strings.Join(d.businesses, ", ")
	}
	return s
}

// control is the CONTROL frame telling devices about the policy.
func (d *degradePolicy) control() *wire.Control {
	return &wire.Control{Kind: wire.ControlDegraded, Priority: d.priority, Businesses: d.businesses, Reason: d.reason}
}

// tunables are the delivery settings an operator may change at run time;
// sessions read them through Node.tun on every use.
type tunables struct {
	inboxMaxLen   int64
	maxTTL        time.Duration // also the TTL of a push that names none
	window        int
	ackTimeout    time.Duration
	ackBackoffMax time.Duration
	queueFrames   int
	queueBytes    int
}

// tunablesFrom overlays the region's tunables on the node's
// configuration. A region-wide inbox TTL never goes past the node's own,
// which its store's keys live for.
func (n *Node) tunablesFrom(t raftmeta.Tunables) *tunables {
	out := &tunables{
		inboxMaxLen: n.cfg.InboxMaxLen, maxTTL: n.cfg.MaxTTL,
		window: n.cfg.Window, ackTimeout: n.cfg.AckTimeout, ackBackoffMax: n.cfg.AckBackoffMax,
		queueFrames: n.cfg.QueueFrames, queueBytes: n.cfg.QueueBytes,
	}
	if t.InboxMaxLen > 0 {
		out.inboxMaxLen = t.InboxMaxLen
	}
	if t.InboxTTL > 0 {
		out.maxTTL = min(t.InboxTTL, n.cfg.MaxTTL)
	}
	if t.InFlightWindow > 0 {
		out.window = t.InFlightWindow
	}
	if t.AckTimeout > 0 {
		out.ackTimeout = t.AckTimeout
	}
	if t.AckBackoffMax > 0 {
		out.ackBackoffMax = t.AckBackoffMax
	}
	out.ackBackoffMax = max(out.ackBackoffMax, out.ackTimeout)
	if t.QueueFrames > 0 {
		out.queueFrames = t.QueueFrames
	}
	if t.QueueBytes >= n.cfg.MaxFrame {
		out.queueBytes = t.QueueBytes
	}
	return out
}

// watchMeta applies the region's metadata to this node whenever it
// changes: apps, degrade, tunables, and this node's drain flag.
func (n *Node) watchMeta() {
	ch, cancel := n.meta.Changes()
	defer cancel()
	for {
		n.applyMeta(n.meta.State())
		select {
		case <-n.stop:
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
		}
	}
}

func (n *Node) applyMeta(st *raftmeta.State) {
	n.storeApps(st)
	n.tun.Store(n.tunablesFrom(st.Tunables))

	var next *degradePolicy
	if st.Degrade.Active {
		next = &degradePolicy{priority: wire.Priority(st.Degrade.Priority), businesses: st.Degrade.Businesses, reason: st.Degrade.Reason}
		next.frame = wire.Append(nil, next.control())
	}
	if prev := n.degrade.Swap(next); !prev.equal(next) {
		if next != nil {
			n.log.Warn("degrade on", "priority", next.priority.String(), "businesses", next.businesses, "reason", next.reason, "by", st.Degrade.By)
		} else {
			n.log.Info("degrade off")
		}
		n.announceDegrade(prev, next)
	}

	self, ok := st.Members[n.cfg.NodeID]
	draining := ok && self.Draining
	if draining && !n.draining.Swap(true) {
		n.log.Warn("node draining: moving devices to other nodes")
		n.goOwned(func() { n.drainSessions(st) })
	} else if !draining {
		n.draining.Store(false)
	}
}

// announceDegrade tells the connected devices a policy change affects:
// CONTROL degraded (the new policy) to those it affects, CONTROL restored
// to those only the previous one affected.
func (n *Node) announceDegrade(prev, next *degradePolicy) {
	n.hub.each(func(s *session) {
		s.mu.Lock()
		businesses := s.businesses
		s.mu.Unlock()
		s.announceDegrade(prev, next, businesses)
	})
}

// announceDegrade sends the session what a change from policy prev to
// next means for a connection carrying businesses, if anything.
func (s *session) announceDegrade(prev, next *degradePolicy, businesses []string) {
	switch {
	case next.affects(businesses):
		s.send(next.frame)
	case prev.affects(businesses):
		s.send(restoredFrame)
	}
}

// currentApps returns the app table of the region's metadata as this node
// holds it now. watchMeta rebuilds the table after each change, a moment
// after the change is applied; a caller that has just synced the
// metadata (a recheck) must see what it waited for, so a table older
// than the state is rebuilt here.
func (n *Node) currentApps() *appTable {
	if n.meta == nil {
		return n.apps.Load()
	}
	return n.storeApps(n.meta.State())
}

// storeApps installs the app table of st unless a table as new is
// installed already, and returns the table installed.
func (n *Node) storeApps(st *raftmeta.State) *appTable {
	for {
		cur := n.apps.Load()
		if cur.index >= st.Index && cur.index != 0 {
			return cur
		}
		next := appTableFromState(st, cur)
		if n.apps.CompareAndSwap(cur, next) {
			return next
		}
	}
}

// appTableFromState builds the app table from Raft state, keeping the
// rate limiters of apps whose limits did not change so a metadata change
// does not refill every bucket.
func appTableFromState(st *raftmeta.State, prev *appTable) *appTable {
	t := &appTable{apps: make(map[string]*appEntry, len(st.Apps)), index: st.Index}
	for id, a := range st.Apps {
		e := &appEntry{id: id, secrets: make(map[string][]byte, len(a.Secrets)), businesses: a.Businesses, maxPayload: a.MaxPayload,
			clientGroupsOff: a.ClientGroupsOff}
		if len(e.businesses) == 0 {
			e.businesses = nil
		}
		if e.maxPayload == 0 {
			e.maxPayload = DefaultMaxPayload
		}
		for _, s := range a.Secrets {
			e.secrets[s.KeyID] = s.Secret
		}
		for _, k := range a.APIKeys {
			e.apiKeys = append(e.apiKeys, k.Hash)
		}
		if a.RatePerSec > 0 {
			burst := a.Burst
			if burst == 0 {
				burst = a.RatePerSec
			}
			if old := prev.apps[id]; old != nil && old.limiter != nil && old.limiter.rate == float64(a.RatePerSec) && old.limiter.burst == float64(burst) {
				e.limiter = old.limiter
			} else {
				e.limiter = newRateLimiter(float64(a.RatePerSec), burst)
			}
		}
		t.apps[id] = e
	}
	return t
}

// drainSessions tells this node's devices to reconnect elsewhere, spread
// over DrainSpread so the other nodes are not hit by every device at once.
func (n *Node) drainSessions(st *raftmeta.State) {
	var sessions []*session
	n.hub.each(func(s *session) { sessions = append(sessions, s) })
	if len(sessions) == 0 {
		return
	}
	pause := n.cfg.DrainSpread / time.Duration(len(sessions))
	for _, s := range sessions {
		if !n.draining.Load() {
			return
		}
		s.closeWith(closeDrain, &wire.Control{Kind: wire.ControlDrain, Reason: "node draining", Addr: n.dispatchTarget(st, s.deviceID())})
		select {
		case <-n.stop:
			return
		case <-time.After(pause):
		}
	}
}
