package appliance

import (
	"context"
	"math"
	"math/rand/v2"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/raftmeta"
)

// Draining: moving a node's devices to the others without a reconnect
// storm. A node drains when the region marks it draining (pushctl nodes
// drain) and when it shuts down (SIGTERM). Either way its sessions get
// CONTROL drain, naming the node dispatch picks for the device, in
// batches spread evenly over DrainSpread: every drainTick or so
// (jittered), the share of sessions whose time has come. The other nodes
// therefore take about sessions/DrainSpread new sessions a second,
// smoothed further by the SDK's own random wait (up to 3 s) before it
// reconnects. Nothing a device has not acked is lost on the way: every
// unicast message is in its inbox before any node sends it, and the
// device's next session replays the inbox from its cursor.

// drainTick is the mean pause between two batches of a drain.
const drainTick = 100 * time.Millisecond

// moveAway sends each session CONTROL drain (to the node dispatch names
// for its device) and closes it with reason, in random order and in
// batches spread evenly over spread. It stops early when quit is closed
// or keep returns false, and returns how many it sent away.
func (n *Node) moveAway(sessions []*session, spread time.Duration, reason closeReason, why string, quit <-chan struct{}, keep func() bool) int {
	rand.Shuffle(len(sessions), func(i, j int) { sessions[i], sessions[j] = sessions[j], sessions[i] })
	var st *raftmeta.State
	if n.meta != nil {
		st = n.meta.State()
	}
	start := time.Now()
	sent := 0
	for sent < len(sessions) {
		if !keep() {
			return sent
		}
		// The sessions due by the next tick: the first batch goes at
		// once, the last at spread.
		due := len(sessions)
		if elapsed := time.Since(start) + drainTick; elapsed < spread {
			due = int(math.Ceil(float64(len(sessions)) * float64(elapsed) / float64(spread)))
		}
		for ; sent < due; sent++ {
			s := sessions[sent]
			ctl := &wire.Control{Kind: wire.ControlDrain, Reason: why}
			if st != nil {
				ctl.Addr = n.dispatchTarget(st, s.deviceID())
			}
			s.closeWith(reason, ctl)
		}
		if sent == len(sessions) {
			break
		}
		pause := time.NewTimer(drainTick/2 + rand.N(drainTick))
		select {
		case <-quit:
			pause.Stop()
			return sent
		case <-pause.C:
		}
	}
	return sent
}

// drainSessions moves this node's devices elsewhere while the region
// marks it draining (see moveAway).
func (n *Node) drainSessions() {
	var sessions []*session
	n.hub.each(func(s *session) { sessions = append(sessions, s) })
	if len(sessions) == 0 {
		return
	}
	start := time.Now()
	n.log.Warn("node draining: moving devices to other nodes", "sessions", len(sessions), "spread", n.cfg.DrainSpread)
	moved := n.moveAway(sessions, n.cfg.DrainSpread, closeDrain, "node draining", n.stop, n.draining.Load)
	n.log.Info("drain: devices sent to other nodes", "sessions", moved, "took", time.Since(start).Round(time.Millisecond))
}

// drainForShutdown moves every session away before the node stops:
// over DrainSpread, or over half of what ctx leaves when that is less,
// so the rest of the shutdown has time too. It then waits, within ctx,
// up to a second for the connections to close, and sends any session
// opened meanwhile away at once.
func (n *Node) drainForShutdown(ctx context.Context) {
	spread := n.cfg.DrainSpread
	if dl, ok := ctx.Deadline(); ok {
		spread = max(0, min(spread, time.Until(dl)/2))
	}
	var sessions []*session
	n.hub.each(func(s *session) { sessions = append(sessions, s) })
	start := time.Now()
	if len(sessions) > 0 {
		n.log.Info("shutting down: moving devices to other nodes", "sessions", len(sessions), "spread", spread.Round(time.Millisecond))
	}
	moved := n.moveAway(sessions, spread, closeShutdown, "node shutting down", ctx.Done(), func() bool { return true })
	wait := time.NewTimer(time.Second)
	defer wait.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for n.hub.count.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-wait.C:
			n.hub.each(func(s *session) {
				s.closeWith(closeShutdown, &wire.Control{Kind: wire.ControlDrain, Reason: "node shutting down"})
			})
			return
		case <-tick.C:
		}
	}
	if moved > 0 {
		n.log.Info("shutting down: devices sent to other nodes", "sessions", moved, "took", time.Since(start).Round(time.Millisecond))
	}
}
