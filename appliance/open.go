package appliance

import (
	"strconv"

	"github.com/pushd/pushd/appliance/wire"
)

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
