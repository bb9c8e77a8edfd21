package appliance

import (
	"context"
	"strconv"
	"time"

	"github.com/pushd/pushd/appliance/wire"
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
	s.welcome(&wire.Welcome{
		Session:   s.id,
		Node:      n.cfg.NodeID,
		Heartbeat: uint64(n.cfg.HeartbeatInterval.Milliseconds()),
		// Nothing is stored without an inbox, so only a fresh client has
		// nothing to miss.
		Recovered: h.Epoch == "",
		MaxFrame:  uint64(n.cfg.MaxFrame),
		Caps:      s.caps,
	})
}
