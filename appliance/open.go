package appliance

import (
	"context"
	"strconv"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/streams"
)

// Handshake rechecks: workers and queue length. A recheck waits for one
// read index of the region's metadata (one round trip to the leader,
// shared by every recheck waiting), so a few workers keep up with a burst.
const (
	recheckWorkers  = 4
	recheckQueueLen = 1024
	recheckTimeout  = 2 * time.Second
)

// recheckLoop admits HELLOs again after syncing the metadata (see
// session.admitHello). A node that cannot sync refuses them as
// unavailable, which devices retry, rather than with a code they take as
// final.
func (n *Node) recheckLoop() {
	for {
		select {
		case <-n.stop:
			return
		case j := <-n.rechecks:
			ctx, cancel := context.WithTimeout(n.ctx, recheckTimeout)
			err := n.meta.Sync(ctx)
			cancel()
			if err != nil {
				j.s.refuse(wire.CodeUnavailable, "cannot reach the region's metadata to check this app; retry with backoff")
				continue
			}
			j.s.admitHello(j.h, true)
		}
	}
}

// open finishes an accepted HELLO: the session becomes the device's live
// connection and WELCOME goes out. With a Store, the route and inbox work
// is handed to the open workers (never done on an nbio callback); a full
// queue refuses the device, whose SDK retries with backoff.
func (n *Node) open(s *session, h *wire.Hello) {
	s.mu.Lock()
	s.id = n.cfg.NodeID + "-" + strconv.FormatUint(n.sessionSeq.Add(1), 36)
	s.mu.Unlock()
	if n.durable != nil {
		select {
		case n.durable.opens <- openJob{s: s, h: h}:
		default:
			s.refuse(wire.CodeUnavailable, "node busy opening sessions; retry with backoff")
		}
		return
	}
	if s.welcome(&wire.Welcome{
		Session:   s.id,
		Node:      n.cfg.NodeID,
		Heartbeat: uint64(n.cfg.HeartbeatInterval.Milliseconds()),
		// Nothing is stored without an inbox, so only a fresh client has
		// nothing to miss.
		Recovered: h.Epoch == "",
		MaxFrame:  uint64(n.cfg.MaxFrame),
		Caps:      s.caps,
	}) {
		s.handleEarly()
	}
}

// logResumeLoss logs why a device's resume cursor could not be continued
// (WELCOME recovered = false). A cursor ahead of its inbox is logged at
// warn, rate-limited: Redis lost acknowledged writes (a crash under
// appendfsync everysec, a failover to a lagging replica), or a client
// keeps a cursor it never received; either way the inbox's epoch was
// replaced and the device must resync. The other causes (another epoch, an
// inbox gone, entries trimmed or expired) are the protocol working as
// designed and are logged at debug.
func (n *Node) logResumeLoss(s *session, h *wire.Hello, res streams.Resumed) {
	s.mu.Lock()
	key := s.key
	s.mu.Unlock()
	if res.Lost != streams.LostAhead {
		n.log.Debug("resume not recovered", "device", key, "lost", res.Lost, "cursor_epoch", h.Epoch, "cursor_seq", h.Seq, "epoch", res.Epoch)
		return
	}
	ok, suppressed := n.cursorAhead.allow(time.Now())
	if !ok {
		return
	}
	n.log.Warn("resume cursor beyond the last seq its inbox assigned: redis lost acknowledged writes or the client kept a wrong cursor; inbox epoch replaced, the device resyncs",
		"device", key, "lost", res.Lost, "cursor_epoch", h.Epoch, "cursor_seq", h.Seq, "last", res.Last, "acked", res.Acked,
		"epoch", res.Epoch, "suppressed_before", suppressed)
}
