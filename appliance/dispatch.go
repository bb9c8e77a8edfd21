package appliance

import (
	"hash/maphash"
	"net/http"

	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/streams"
)

// Dispatch answers which node a device should connect to: the control
// layer of the seed designs. Membership, weights and drain flags come from
// Raft; liveness and load (connections) from the nodes' Redis heartbeats,
// which the liveness loop caches every second.

type dispatchAnswer struct {
	Node   string `json:"node"`
	WSURL  string `json:"ws_url"`
	TCPURL string `json:"tcp_url,omitempty"`
}

// pickNode chooses a live, non-draining member with weight > 0 for
// device: the one with the fewest connections per unit of weight. Ties
// (an idle region) are broken by a hash of device and node, so a device
// keeps coming back to the same node while loads are even. exclude names a
// node to skip (a draining node choosing where to send its devices).
func (n *Node) pickNode(st *raftmeta.State, device, exclude string) (streams.NodeInfo, bool) {
	live := n.liveNodes.Load()
	if live == nil {
		return streams.NodeInfo{}, false
	}
	var best streams.NodeInfo
	var bestScore float64
	var bestTie uint64
	found := false
	for _, info := range *live {
		m, ok := st.Members[info.ID]
		if m.DeviceAddr != "" {
			info.DeviceAddr, info.TCPAddr = m.DeviceAddr, m.TCPAddr
		}
		if !ok || m.Draining || m.Weight <= 0 || info.ID == exclude || info.DeviceAddr == "" {
			continue
		}
		score := float64(info.Conns+1) / float64(m.Weight)
		tie := maphash.String(n.hub.seed, device+"\x00"+info.ID)
		if !found || score < bestScore || (score == bestScore && tie < bestTie) {
			best, bestScore, bestTie, found = info, score, tie, true
		}
	}
	return best, found
}

// dispatchTarget is the WebSocket URL a draining node sends device to, or
// "" to let the device use its own dispatch.
func (n *Node) dispatchTarget(st *raftmeta.State, device string) string {
	if info, ok := n.pickNode(st, device, n.cfg.NodeID); ok {
		return info.DeviceAddr
	}
	return ""
}

// serveDispatch answers GET /v1/dispatch?app=A&device=D on the device
// port.
func (n *Node) serveDispatch(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, code: "method_not_allowed", msg: "use GET"})
		return
	}
	app, device := r.URL.Query().Get("app"), r.URL.Query().Get("device")
	if !token.ValidID(app) || !token.ValidID(device) {
		writeError(w, badRequest("invalid_field", "app and device must be 1-128 letters, digits or ._:-"))
		return
	}
	if n.meta == nil {
		a := n.Addrs()
		writeJSON(w, http.StatusOK, dispatchAnswer{Node: n.cfg.NodeID, WSURL: n.advertisedWS(a), TCPURL: n.advertisedTCP(a)})
		return
	}
	info, ok := n.pickNode(n.meta.State(), inboxKey(app, device), "")
	if !ok {
		writeError(w, &apiError{status: http.StatusServiceUnavailable, code: "unavailable", msg: "no live node takes devices right now", retryAfter: 5e9})
		return
	}
	writeJSON(w, http.StatusOK, dispatchAnswer{Node: info.ID, WSURL: info.DeviceAddr, TCPURL: info.TCPAddr})
}
