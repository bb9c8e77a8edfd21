// Package appliance is the pushd node runtime: the device listeners (nbio
// event loops, WebSocket and raw TCP), the sessions above them, the
// sharded hub that finds a device's session and a group's members, the
// timing wheels that drive handshake deadlines, idle reaping and
// retransmits, the flushers that merge a connection's frames into one
// write, and the loops that tie the node to the region's Redis (inboxes,
// routes, delivery streams, heartbeats) and Raft metadata (apps, degrade,
// tunables, membership).
//
// A Node is built with New from a Config (every field documents its zero
// value) and its collaborators (Deps: a streams.Store, a raftmeta.Store,
// a logger and a metrics registry), started with Start and stopped with
// Shutdown:
//
//	node, err := appliance.New(cfg, appliance.Deps{Store: store, Meta: meta})
//	...
//	if err := node.Start(); err != nil { ... }
//	<-node.Ready() // its metadata caught up with the region's
//	...
//	err = node.Shutdown(ctx)
//
// The HTTP APIs are not part of the runtime: appliance/pushapi and
// appliance/adminapi serve them over the node's exported core
// (AuthorizeAPIKey, Sheds, PushLimits, TraceAccepted, PushDevices,
// PushUsers, UserDevices, PushGroup, ChangeGroupMembers, GroupState,
// SetGroupStream, UserState, DeviceState, Tunables, Counters, Refusing,
// Trace, ServeHealth), on listeners their caller owns; their types live
// in appliance/api. The Kafka bridge between regions, appliance/bridge,
// uses the same core and its side for imports (Region, LookupApp,
// Import). The device port's own HTTP
// (/healthz, /v1/dispatch, /metrics) is the runtime's, as is ServeConn,
// which serves a device connection the caller accepted itself.
//
// Every exported method of Node is safe for concurrent use. DESIGN.md
// in this directory follows a push from the API to the socket and back,
// lists every goroutine the node starts and who stops it, and gives the
// lock order.
package appliance
