/*
Package streams keeps pushd's state in the region's Redis: device inboxes
with contiguous per-device sequence numbers, acknowledgement cursors, the
route registry that says which node holds a device's connection, the
delivery streams nodes use to hand each other pushes, and node heartbeats.
It is the only package in pushd that talks to Redis.

A Store is made from a go-redis client, created by the caller with
ContextTimeoutEnabled set so that context deadlines bound every call:

	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	store := streams.New(rdb, streams.Config{})

Storing a message for some devices assigns each device's next seq, and a
connecting device resumes from the last seq it processed:

	res, err := store.Append(ctx, streams.Message{ID: id, Payload: body}, []string{"dev1", "dev2"})
	...
	r, err := store.Resume(ctx, "dev1", streams.Position{Epoch: epoch, Seq: seq}, 16)
	if !r.Recovered {
		// Messages after seq were lost (trimmed, expired, or Redis lost
		// data): the app must resync.
	}
	...
	applied, err := store.AckMany(ctx, []streams.AckRequest{{Device: "dev1", Epoch: r.Epoch, Seq: last}})

A node that accepts a device's connection claims the device's route and
resumes its inbox in one round trip with Open, renews the routes of its
connected devices with RefreshRoutes (a false result means a connection
lost its route) and releases closed sessions' routes with ReleaseRoutes.
It calls Heartbeat every second; a false result after the first means
Redis may have lost the node's routes (a flush, a restart, a failover),
so the node re-checks them at once:

	continued, err := store.Heartbeat(ctx, streams.NodeInfo{ID: node})
	if err == nil && !continued && beatBefore {
		// Not this Store's first heartbeat for the node: RefreshRoutes
		// for every connected device now.
	}
	beatBefore = beatBefore || err == nil

Every call that takes many devices does its Redis work in one pipeline, and
every multi-step change runs as one Lua script, so it is atomic. Scripts
that can be resent after a timeout (go-redis retries) are idempotent:
Append deduplicates by message id, acks are cumulative, and ClaimRoute
carries a claim token. DESIGN.md in this directory lists every key, its
bound and each script.

Errors that mean Redis could not be reached or did not answer in time wrap
ErrUnavailable; such a call may or may not have been applied.

A Store holds no state beyond its configuration and, per node id, the
token of its last heartbeat; it is safe for concurrent use by multiple
goroutines. Package streamstest runs a real redis-server for
tests.
*/
package streams
