package appliance

import (
	"encoding/binary"
	"hash/fnv"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/streams"
)

// Dispatch answers which node a device should connect to: the control
// layer of the seed designs. Membership, weights and drain flags come from
// Raft; liveness and load (connections) from the nodes' Redis heartbeats,
// which the liveness loop caches every second.

// pickNode chooses where device should connect, among live members that
// are not draining and have weight > 0: weighted rendezvous hashing names
// the device's two preferred nodes, and the less loaded of the two (by
// connections per unit of weight, from the heartbeats) wins. The hash
// keeps a device coming back to the same nodes and spreads devices even
// when every node reports the same load (a connect storm outruns the
// one-second heartbeats); the second choice steers away from a node that
// is fuller than its share. exclude names a node to skip (a draining node
// choosing where to send its devices, or the node a device just failed to
// reach). Nodes that refuse devices (starting, draining, stopping, full,
// as their heartbeats say) are skipped. The hash is the same in every
// process, so every node gives one device the same answer.
func (n *Node) pickNode(st *raftmeta.State, device, exclude string) (streams.NodeInfo, bool) {
	live := n.liveNodes.Load()
	if live == nil {
		return streams.NodeInfo{}, false
	}
	type choice struct {
		info  streams.NodeInfo
		rank  float64 // rendezvous score: higher is preferred
		shard float64 // connections per unit of weight
	}
	var first, second choice
	found := 0
	for _, info := range *live {
		m, ok := st.Members[info.ID]
		if ok && m.DeviceAddr != "" {
			info.DeviceAddr, info.TCPAddr = m.DeviceAddr, m.TCPAddr
		}
		if !ok || m.Draining || m.Weight <= 0 || info.ID == exclude || info.DeviceAddr == "" || info.Refusing != "" {
			continue
		}
		// Weighted rendezvous: -w / ln(u) for u uniform in (0,1) from the
		// hash orders nodes in proportion to their weight.
		u := (float64(rendezvousHash(device, info.ID)>>11) + 0.5) / (1 << 53)
		c := choice{info: info, rank: -float64(m.Weight) / math.Log(u), shard: float64(info.Conns) / float64(m.Weight)}
		switch {
		case found == 0 || c.rank > first.rank:
			first, second = c, first
		case found == 1 || c.rank > second.rank:
			second = c
		}
		found++
	}
	switch {
	case found == 0:
		return streams.NodeInfo{}, false
	case found > 1 && second.shard < first.shard:
		return second.info, true
	}
	return first.info, true
}

// rendezvousHash scores a device on a node: FNV-1a over both ids, then
// the splitmix64 finalizer so that ids differing in one character still
// get independent scores. It must not depend on the process (no random
// seed): nodes answer dispatch alike only if they score alike.
func rendezvousHash(device, node string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(device))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(node))
	var b [8]byte
	x := binary.LittleEndian.Uint64(h.Sum(b[:0]))
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// avoidedNode maps a dispatch request's avoid parameter, a node id or one
// of its device URLs, to the node id ("" for none).
func (n *Node) avoidedNode(st *raftmeta.State, avoid string) string {
	if avoid == "" {
		return ""
	}
	if _, ok := st.Members[avoid]; ok {
		return avoid
	}
	if live := n.liveNodes.Load(); live != nil {
		for _, info := range *live {
			if info.DeviceAddr == avoid || info.TCPAddr == avoid {
				return info.ID
			}
		}
	}
	for id, m := range st.Members {
		if m.DeviceAddr == avoid || m.TCPAddr == avoid {
			return id
		}
	}
	return ""
}

// dispatchTarget is the WebSocket URL a draining node sends device to, or
// "" to let the device use its own dispatch.
func (n *Node) dispatchTarget(st *raftmeta.State, device string) string {
	if info, ok := n.pickNode(st, device, n.cfg.NodeID); ok {
		return info.DeviceAddr
	}
	return ""
}

// serveDispatch answers GET /v1/dispatch?app=A&device=D[&avoid=URL] on
// the device port. avoid is the URL (or node id) the device failed to
// reach or lost last: another node is named if there is one, so a device
// of a killed node does not wait for its heartbeat to expire.
func (n *Node) serveDispatch(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		api.WriteError(w, &api.APIError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "use GET"})
		return
	}
	// A page on another origin asks with fetch: it may read the answer
	// when its origin may open a WebSocket here.
	if origin := r.Header.Get("Origin"); origin != "" && n.originListed(origin) {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Add("Vary", "Origin")
	}
	app, device := r.URL.Query().Get("app"), r.URL.Query().Get("device")
	if !token.ValidID(app) || !token.ValidID(device) {
		api.WriteError(w, api.BadRequest("invalid_field", "app and device must be 1-128 letters, digits or ._:-"))
		return
	}
	if n.meta == nil {
		a := n.Addrs()
		api.WriteJSON(w, http.StatusOK, api.Dispatch{Node: n.cfg.NodeID, WSURL: n.advertisedWS(a), TCPURL: n.advertisedTCP(a)})
		return
	}
	st := n.meta.State()
	key := inboxKey(app, device)
	info, ok := n.pickNode(st, key, n.avoidedNode(st, r.URL.Query().Get("avoid")))
	if !ok {
		info, ok = n.pickNode(st, key, "")
	}
	if !ok {
		api.WriteError(w, &api.APIError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "no live node takes devices right now", RetryAfter: 5 * time.Second})
		return
	}
	api.WriteJSON(w, http.StatusOK, api.Dispatch{Node: info.ID, WSURL: info.DeviceAddr, TCPURL: info.TCPAddr})
}

// originListed reports whether a browser origin is in AllowedOrigins, or
// the list is empty (any origin).
func (n *Node) originListed(origin string) bool {
	if len(n.cfg.AllowedOrigins) == 0 {
		return true
	}
	for _, o := range n.cfg.AllowedOrigins {
		if strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}
