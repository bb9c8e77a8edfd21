// Package bridge carries pushes between regions over Kafka: a business
// server in one region (Beijing) reaches a device connected in another
// (Shanghai), and a national notice reaches every region once.
//
// A Bridge runs on every node of a region beside the node's push API,
// and, like the push API, talks to the node only through its exported
// core (Core; *appliance.Node is one). The push API hands it the part of
// a push meant for other regions (Export), which it produces to Kafka —
// idempotent, acks=all, lz4 batches, keyed so one device's (or user's)
// records stay in order — without ever waiting for Kafka: the records go into a
// bounded buffer, and a push that does not fit is answered "failed" for
// those regions. Every node is also a member of its region's consumer
// group: it reads the records other regions produced, decides from their
// headers alone whether they are for this region, decodes only those,
// and hands them to the core (appliance.Node.Import), which delivers them
// through the same durable path as a local push and never exports them
// again. Offsets are committed only for records whose import Redis
// answered.
//
//	b, err := bridge.New(node, bridge.Config{Brokers: []string{"kafka-1:9092"}, Peers: []string{"sh"}}, log)
//	...
//	err = b.Start()
//	push := pushapi.New(node, pushapi.Options{Bridge: b})
//	...
//	err = b.Close(ctx) // before the node's Shutdown
//
// record.go defines the records; DESIGN.md in this directory follows an
// exported push to a device in another region, and says what happens
// when Kafka, Redis or a node fails. Every method of Bridge is safe for
// concurrent use.
package bridge
