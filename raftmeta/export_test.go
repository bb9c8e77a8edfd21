package raftmeta

import "github.com/hashicorp/raft"

// HoldMembershipChanges takes the leader's one-slot membership lock, as a
// slow change would, until release is called.
func HoldMembershipChanges(s *Store) (release func()) {
	s.members <- struct{}{}
	return func() { <-s.members }
}

// ObserveOwnLeadership hands s the observation raft makes when s becomes
// the leader, as it does after a leadership that ended and came back.
func ObserveOwnLeadership(s *Store) {
	s.obsCh <- raft.Observation{Data: raft.LeaderObservation{LeaderID: raft.ServerID(s.id)}}
}
