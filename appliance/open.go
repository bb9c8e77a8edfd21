package appliance

import (
	"strconv"

	"github.com/pushd/pushd/appliance/wire"
)

// open finishes an accepted HELLO: the session becomes the device's live
// connection and WELCOME goes out.
func (n *Node) open(s *session, h *wire.Hello) {
	s.mu.Lock()
	s.id = n.cfg.NodeID + "-" + strconv.FormatUint(n.sessionSeq.Add(1), 36)
	s.mu.Unlock()
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

// sessionClosed releases what an open session held beyond the hub.
func (n *Node) sessionClosed(*session) {}

// queueAck records a device's cumulative ack in its inbox.
func (n *Node) queueAck(device, epoch string, seq uint64) {}

// requestFetch queues s for a read of its inbox.
func (n *Node) requestFetch(s *session) {}
