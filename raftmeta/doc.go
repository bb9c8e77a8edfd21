/*
Package raftmeta replicates a region's slow-changing metadata — members,
apps with their signing secrets and API key hashes, the degrade policy,
tunables and admin tokens — across the pushd nodes of the region with
hashicorp/raft. Routes and messages are never in raft.

Each node opens a Store on its data directory. The first node of a new
region bootstraps, then registers itself:

	s, err := raftmeta.Open(raftmeta.Config{
		ID:       "bj-1",
		DataDir:  "/var/lib/pushd/meta",
		RaftBind: "10.0.0.1:7000",
		Logger:   logger,
	})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Bootstrap(); err != nil { // no-op once the node has state
		return err
	}
	if err := s.WaitForLeader(ctx); err != nil {
		return err
	}
	err = s.Join(ctx, raftmeta.Member{ID: "bj-1", RaftAddr: s.RaftAddr(), AdminAddr: "10.0.0.1:9090"}, raftmeta.Caller{})

Every other node opens its Store the same way without bootstrapping, and
asks the leader to Join it. The leader keeps an odd number of voters, up
to five, and makes the other nodes non-voters. Reads are local and
lock-free:

	st := s.State()
	if st.Degrade.Active && prio <= st.Degrade.Priority {
		// shed the push, if its business is listed or none are
	}

Writes are commands, built by one constructor per command type and
applied on the leader:

	res, err := s.Apply(ctx, raftmeta.SetDegrade(raftmeta.Degrade{Priority: raftmeta.PriorityLow, Reason: "surge"}))

On a follower Apply returns a *NotLeaderError (errors.Is(err,
ErrNotLeader)) naming the leader's Member record; the caller forwards the
request to its AdminAddr (pushd forwards the admin HTTP request, waiting
through an election and bounding the hops; see DESIGN.md). Every command
carries a request id, and the FSM answers a repeated
id with the first result without applying it again, so retrying after
ErrLeadershipLost or a lost answer is safe. Changes delivers a signal
after every applied change, so a node can act on a new degrade policy as
soon as it applies it.

A Store is safe for concurrent use. A *State is immutable: each applied
command publishes a new one, and readers holding an older one keep a
consistent view. See DESIGN.md for the log and snapshot formats and the
compatibility rules, and package raftmetatest for in-process clusters.
*/
package raftmeta
