package raftmeta_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/raftmeta/raftmetatest"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newApp(id string) raftmeta.App {
	_, k := raftmeta.NewAPIKey("k1")
	return raftmeta.App{ID: id, Secrets: []raftmeta.Secret{raftmeta.NewSecret("s1")}, APIKeys: []raftmeta.APIKey{k}}
}

func voters(servers []raftmeta.Server) int {
	n := 0
	for _, s := range servers {
		if s.Voter {
			n++
		}
	}
	return n
}

func TestCluster_JoinReplicateForwardDegradeRemove(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	ctx := ctxT(t, 30*time.Second)
	li, leader := c.WaitForLeader(t)

	// Join: three voters in raft, three voter members in every state.
	servers, err := leader.Servers()
	if err != nil || len(servers) != 3 || voters(servers) != 3 {
		t.Fatalf("servers = %+v, %v", servers, err)
	}
	for i := range 3 {
		st := c.Store(i).State()
		if len(st.Members) != 3 || len(st.Voters()) != 3 {
			t.Fatalf("node %d members = %+v", i, st.Members)
		}
		want := c.Member(i)
		got := st.Members[want.ID]
		if got.RaftAddr != want.RaftAddr || got.AdminAddr != want.AdminAddr || !got.Voter || got.Joined.IsZero() {
			t.Fatalf("node %d record = %+v, want %+v", i, got, want)
		}
	}
	// Joining again with the same id and address changes nothing in raft.
	if err := leader.Join(ctx, c.Member((li+1)%3), raftmeta.Caller{}); err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	if again, _ := leader.Servers(); !reflect.DeepEqual(again, servers) {
		t.Fatalf("rejoin changed servers: %+v", again)
	}

	// Writes on the leader reach every node.
	if _, err := leader.Apply(ctx, raftmeta.CreateApp(newApp("chat"))); err != nil {
		t.Fatal(err)
	}
	tok, at := raftmeta.NewAdminToken("ops", raftmeta.RoleOperator)
	if _, err := leader.Apply(ctx, raftmeta.CreateAdminToken(at)); err != nil {
		t.Fatal(err)
	}
	c.WaitConverged(t)
	for i := range 3 {
		st := c.Store(i).State()
		if _, ok := st.App("chat"); !ok {
			t.Fatalf("node %d lacks the app", i)
		}
		if role, _, ok := st.AdminRole(tok); !ok || role != raftmeta.RoleOperator {
			t.Fatalf("node %d token role %q %v", i, role, ok)
		}
	}

	// A follower refuses writes and says where the leader is.
	fi := (li + 1) % 3
	follower := c.Store(fi)
	_, err = follower.Apply(ctx, raftmeta.SetTunables(raftmeta.Tunables{QueueFrames: 1}))
	var nle *raftmeta.NotLeaderError
	if !errors.Is(err, raftmeta.ErrNotLeader) || !errors.As(err, &nle) {
		t.Fatalf("follower apply: %v", err)
	}
	if nle.LeaderID != c.Member(li).ID || !nle.Known || nle.Leader.AdminAddr != c.Member(li).AdminAddr {
		t.Fatalf("not-leader error = %+v", nle)
	}
	if lm, ok := follower.LeaderMember(); !ok || lm.ID != c.Member(li).ID {
		t.Fatalf("LeaderMember = %+v %v", lm, ok)
	}
	if err := follower.Join(ctx, c.Member(fi), raftmeta.Caller{}); !errors.Is(err, raftmeta.ErrNotLeader) {
		t.Fatalf("follower join: %v", err)
	}
	if err := follower.Remove(ctx, c.Member(li).ID, raftmeta.Caller{}); !errors.Is(err, raftmeta.ErrNotLeader) {
		t.Fatalf("follower remove: %v", err)
	}

	// Degrade reaches every node, and Changes fires on each within 1 s.
	chans := make([]<-chan struct{}, 3)
	for i := range 3 {
		ch, cancel := c.Store(i).Changes()
		defer cancel()
		chans[i] = ch
	}
	start := time.Now()
	if _, err := leader.Apply(ctx, raftmeta.SetDegrade(raftmeta.Degrade{Priority: raftmeta.PriorityHigh, Reason: "storm"})); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		deadline := time.NewTimer(time.Second - time.Since(start))
		for !c.Store(i).State().Degrade.Active {
			select {
			case <-chans[i]:
			case <-deadline.C:
				t.Fatalf("node %d: degrade not seen within 1 s", i)
			}
		}
		deadline.Stop()
		t.Logf("node %d saw degrade after %v", i, time.Since(start).Round(time.Millisecond))
	}

	// Remove a follower: gone from raft and from every remaining state.
	gone := c.Member(fi).ID
	if err := leader.Remove(ctx, gone, raftmeta.Caller{}); err != nil {
		t.Fatal(err)
	}
	c.Kill(fi)
	if servers, _ := leader.Servers(); len(servers) != 2 {
		t.Fatalf("servers after remove = %+v", servers)
	}
	c.WaitConverged(t)
	for i := range 3 {
		if s := c.Store(i); s != nil {
			if _, ok := s.State().Members[gone]; ok {
				t.Fatalf("node %d still lists %s", i, gone)
			}
		}
	}
	if err := leader.Remove(ctx, gone, raftmeta.Caller{}); !errors.Is(err, raftmeta.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	// Two voters still commit.
	if _, err := leader.Apply(ctx, raftmeta.DegradeOff("calm")); err != nil {
		t.Fatal(err)
	}
}

// checkVoters checks the leader's raft configuration (servers in all,
// voters among them) and that every running node's member records agree
// with it on who votes.
func checkVoters(t *testing.T, c *raftmetatest.Cluster, servers, voters int) {
	t.Helper()
	c.WaitConverged(t)
	_, leader := c.WaitForLeader(t)
	cf, err := leader.Servers()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	suffrage := map[string]bool{}
	for _, s := range cf {
		suffrage[s.ID] = s.Voter
		if s.Voter {
			n++
		}
	}
	if len(cf) != servers || n != voters {
		t.Fatalf("%d servers with %d voters, want %d with %d: %+v", len(cf), n, servers, voters, cf)
	}
	for i := range c.Len() {
		s := c.Store(i)
		if s == nil {
			continue
		}
		members := s.State().Members
		if len(members) != servers {
			t.Fatalf("node %d lists %d members, raft has %d servers", i, len(members), servers)
		}
		for id, m := range members {
			if v, ok := suffrage[id]; !ok || m.Voter != v {
				t.Fatalf("node %d records %s voter=%v; in raft: present %v, voter %v", i, id, m.Voter, ok, v)
			}
		}
	}
}

// follower returns the index of a running node other than the leader
// with the given suffrage.
func follower(t *testing.T, c *raftmetatest.Cluster, voter bool) int {
	t.Helper()
	_, leader := c.WaitForLeader(t)
	servers, err := leader.Servers()
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.Len() {
		s := c.Store(i)
		if s == nil || s == leader {
			continue
		}
		for _, srv := range servers {
			if srv.ID == c.Member(i).ID && srv.Voter == voter {
				return i
			}
		}
	}
	t.Fatalf("no running follower with voter=%v in %+v", voter, servers)
	return -1
}

// TestCluster_VoterCountStaysOdd adds nodes one at a time: the voters go
// 1, 3, 5, the second, fourth and sixth node wait as non-voters, and each
// join that makes a third or fifth voter possible promotes the waiting one.
func TestCluster_VoterCountStaysOdd(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 1)
	checkVoters(t, c, 1, 1)
	for _, step := range []struct{ servers, voters int }{{2, 1}, {3, 3}, {4, 3}, {5, 5}, {6, 5}} {
		c.Add(t)
		checkVoters(t, c, step.servers, step.voters)
	}
}

// TestCluster_ConcurrentJoinsAgreeOnVoters: a fleet started together
// joins at once, so the leader runs several Joins side by side. Each one
// promotes the others' nodes as well as its own; the voters must still
// reach the odd target, and every member record must say what raft says.
// The interleaving that went wrong is a matter of timing, so each size
// is tried a few times.
func TestCluster_ConcurrentJoinsAgreeOnVoters(t *testing.T) {
	t.Parallel()
	for _, joining := range []int{2, 4, 2, 4, 2, 4} {
		t.Run(strconv.Itoa(joining), func(t *testing.T) {
			c := raftmetatest.NewCluster(t, 1)
			c.WaitForLeader(t)
			ctx := ctxT(t, 30*time.Second)
			var wg sync.WaitGroup
			for range joining {
				i := c.Open(t)
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Through whichever node leads: on a busy machine the
					// fast timings can cost the first leader its lease
					// while the joins run.
					if err := c.Join(ctx, i, raftmeta.Caller{}); err != nil {
						t.Errorf("join %s: %v", c.Member(i).ID, err)
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			checkVoters(t, c, joining+1, joining+1)
		})
	}
}

// TestCluster_NewLeaderCorrectsSuffrageRecords: a leader that dies
// between a promotion and its record leaves a member recorded as a
// non-voter while raft has it vote (written here by hand); the next
// leader corrects the record when it takes office.
func TestCluster_NewLeaderCorrectsSuffrageRecords(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	ctx := ctxT(t, 30*time.Second)
	checkVoters(t, c, 3, 3)
	li, leader := c.WaitForLeader(t)
	v := follower(t, c, true)
	rec := leader.State().Members[c.Member(v).ID]
	rec.Voter = false
	res, err := leader.Apply(ctx, raftmeta.UpsertMember(rec))
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(li)
	raftmetatest.WaitFor(t, 10*time.Second, func() error {
		_, leader := c.Leader()
		if leader == nil {
			return errors.New("no leader")
		}
		// Until the new leader applies the wrong record, it still
		// holds the right one from before.
		if st := leader.State(); st.Index <= res.Index {
			return fmt.Errorf("the leader applied up to %d, the wrong record is %d", st.Index, res.Index)
		}
		if m := leader.State().Members[rec.ID]; !m.Voter {
			return fmt.Errorf("%s is still recorded as a non-voter", rec.ID)
		}
		return nil
	})
	checkVoters(t, c, 3, 3)
}

// TestCluster_RemovingAVoterPromotesANonvoter: 5 voters and a non-voter;
// removing a voter makes the non-voter one, with no join needed.
func TestCluster_RemovingAVoterPromotesANonvoter(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 6)
	ctx := ctxT(t, 30*time.Second)
	checkVoters(t, c, 6, 5)
	waiting := follower(t, c, false)
	victim := follower(t, c, true)

	_, leader := c.WaitForLeader(t)
	if err := leader.Remove(ctx, c.Member(victim).ID, raftmeta.Caller{}); err != nil {
		t.Fatal(err)
	}
	c.Kill(victim)
	checkVoters(t, c, 5, 5)
	if m := c.Store(waiting).State().Members[c.Member(waiting).ID]; !m.Voter {
		t.Fatalf("the waiting node is not recorded as a voter: %+v", m)
	}
	// Five voters with none dead commit a write.
	if _, err := c.Apply(ctx, raftmeta.SetMemberWeight(c.Member(waiting).ID, 7)); err != nil {
		t.Fatal(err)
	}
}

// TestCluster_LeaderLeavingPromotesANonvoter: the leader promotes the
// waiting non-voter before it removes itself, since it cannot after.
func TestCluster_LeaderLeavingPromotesANonvoter(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 4)
	ctx := ctxT(t, 30*time.Second)
	checkVoters(t, c, 4, 3)
	li, leader := c.WaitForLeader(t)
	if err := leader.Leave(ctx, raftmeta.Caller{}); err != nil {
		t.Fatal(err)
	}
	c.Kill(li)
	checkVoters(t, c, 3, 3)
}

// twoVotersAndADeadNonvoter forms four nodes (three voters), kills the
// non-voter, and once the leader sees it unreachable removes and kills a
// voter: the non-voter is not promoted in its place. It returns the
// cluster, the non-voter's index and ID, and the leader.
func twoVotersAndADeadNonvoter(t *testing.T) (*raftmetatest.Cluster, int, string, *raftmeta.Store) {
	t.Helper()
	c := raftmetatest.NewCluster(t, 4)
	ctx := ctxT(t, 30*time.Second)
	checkVoters(t, c, 4, 3)
	waiting := follower(t, c, false)
	id := c.Member(waiting).ID
	c.Kill(waiting)
	var leader *raftmeta.Store
	// Whichever node leads must see the non-voter unreachable.
	raftmetatest.WaitFor(t, 30*time.Second, func() error {
		if _, leader = c.Leader(); leader == nil {
			return errors.New("no leader")
		}
		if u := leader.Stats().Unreachable; !slices.Equal(u, []string{id}) {
			return fmt.Errorf("leader sees %v unreachable, want [%s]", u, id)
		}
		return nil
	})
	victim := follower(t, c, true)
	if err := leader.Remove(ctx, c.Member(victim).ID, raftmeta.Caller{}); err != nil {
		t.Fatal(err)
	}
	c.Kill(victim)
	checkVoters(t, c, 3, 2)
	return c, waiting, id, leader
}

// waitPromoted waits until the leader records id as a voter, and raft
// has three voters of three servers.
func waitPromoted(t *testing.T, c *raftmetatest.Cluster, id string, within time.Duration) {
	t.Helper()
	raftmetatest.WaitFor(t, within, func() error {
		_, leader := c.Leader()
		if leader == nil {
			return errors.New("no leader")
		}
		if m := leader.State().Members[id]; !m.Voter {
			return fmt.Errorf("%s is recorded as a non-voter: %+v", id, m)
		}
		return nil
	})
	checkVoters(t, c, 3, 3)
}

// TestCluster_UnreachableNonvoterIsNotPromoted: a non-voter the leader
// cannot heartbeat stays one when a voter goes; once it answers again,
// the leader promotes it with no second join.
func TestCluster_UnreachableNonvoterIsNotPromoted(t *testing.T) {
	t.Parallel()
	c, waiting, id, _ := twoVotersAndADeadNonvoter(t)
	c.Restart(t, waiting)
	waitPromoted(t, c, id, 30*time.Second)
}

// TestCluster_NonvoterBackUnderALeadershipThatEndedIsPromoted: a
// non-voter's heartbeats resume to a leader that loses the leadership
// before its reconcile promotes it (held here behind a slow membership
// change). The leadership after it never saw those heartbeats fail, and
// still promotes the non-voter once it has heartbeated it a while.
func TestCluster_NonvoterBackUnderALeadershipThatEndedIsPromoted(t *testing.T) {
	t.Parallel()
	c, waiting, id, leader := twoVotersAndADeadNonvoter(t)

	release := raftmeta.HoldMembershipChanges(leader)
	c.Restart(t, waiting)
	raftmetatest.WaitFor(t, 30*time.Second, func() error {
		if u := leader.Stats().Unreachable; len(u) != 0 {
			return fmt.Errorf("leader sees %v unreachable", u)
		}
		return nil
	})
	// The leadership in which the heartbeats resumed ends; this node
	// leads again, with no memory of them.
	raftmeta.ObserveOwnLeadership(leader)
	raftmetatest.WaitFor(t, 10*time.Second, func() error {
		if _, l := c.Leader(); l != leader {
			return errors.New("leadership moved")
		}
		return nil
	})
	release()
	// A sweep comes HeartbeatTimeout + 10 s into each leadership.
	waitPromoted(t, c, id, 60*time.Second)
}

// TestCluster_RemoveDeadFollower removes a follower that was killed
// without leaving, as an operator does after a host dies.
func TestCluster_RemoveDeadFollower(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	ctx := ctxT(t, 30*time.Second)
	li, leader := c.WaitForLeader(t)
	dead := (li + 1) % 3
	id := c.Member(dead).ID
	c.Kill(dead)
	if _, err := c.Apply(ctx, raftmeta.SetMemberWeight(c.Member(li).ID, 1)); err != nil {
		t.Fatalf("two of three voters: %v", err)
	}

	if err := leader.Remove(ctx, id, raftmeta.Caller{}); err != nil {
		t.Fatal(err)
	}
	checkVoters(t, c, 2, 2)
	for i := range 5 {
		if _, err := c.Apply(ctx, raftmeta.SetMemberWeight(c.Member(li).ID, 10+i)); err != nil {
			t.Fatalf("write %d after the remove: %v", i, err)
		}
	}
	c.WaitConverged(t)
	for _, i := range []int{li, 3 - li - dead} {
		st := c.Store(i).State()
		if _, ok := st.Members[id]; ok {
			t.Fatalf("node %d still has the dead node's record", i)
		}
		if w := st.Members[c.Member(li).ID].Weight; w != 14 {
			t.Fatalf("node %d: weight %d after the writes, want 14", i, w)
		}
	}
}

// TestCluster_MembershipChangesRecordTheCaller: Join and Remove write the
// caller's actor and request id into the audit, and a remove retried with
// its request id is answered like the first.
func TestCluster_MembershipChangesRecordTheCaller(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	ctx := ctxT(t, 30*time.Second)
	li, leader := c.WaitForLeader(t)
	fi := (li + 1) % 3
	m := c.Member(fi)

	audited := func(op, requestID string) raftmeta.AuditEntry {
		t.Helper()
		for _, e := range leader.State().Audit {
			if e.Op == op && e.RequestID == requestID {
				return e
			}
		}
		t.Fatalf("no %s audit entry with request id %s: %+v", op, requestID, leader.State().Audit)
		return raftmeta.AuditEntry{}
	}

	join := raftmeta.Caller{RequestID: "join-1", Actor: "ops-alice"}
	if err := leader.Join(ctx, m, join); err != nil {
		t.Fatal(err)
	}
	if e := audited("member.upsert", "join-1"); e.Actor != "ops-alice" || e.Target != m.ID || !strings.Contains(e.Summary, "raft_addr="+m.RaftAddr) {
		t.Fatalf("join audit entry %+v", e)
	}

	remove := raftmeta.Caller{RequestID: "remove-1", Actor: "ops-bob"}
	if err := leader.Remove(ctx, m.ID, remove); err != nil {
		t.Fatal(err)
	}
	c.Kill(fi)
	if e := audited("member.remove", "remove-1"); e.Actor != "ops-bob" || e.Target != m.ID {
		t.Fatalf("remove audit entry %+v", e)
	}
	// The answer was lost; the client retries with its request id.
	if err := leader.Remove(ctx, m.ID, remove); err != nil {
		t.Fatalf("retried remove: %v", err)
	}
	if err := leader.Remove(ctx, m.ID, raftmeta.Caller{RequestID: "remove-2"}); !errors.Is(err, raftmeta.ErrNotFound) {
		t.Fatalf("a new remove of the removed node: %v", err)
	}
	n := 0
	for _, e := range leader.State().Audit {
		if e.Op == "member.remove" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d member.remove audit entries, want 1", n)
	}
}

func TestCluster_RejoinAtNewAddressReplacesTheOldEntry(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	ctx := ctxT(t, 30*time.Second)
	li, _ := c.WaitForLeader(t)
	fi := (li + 1) % 3
	c.Kill(fi)

	// The same node id comes back from a fresh host at another address.
	cfg := c.Config(fi)
	cfg.DataDir = t.TempDir()
	cfg.RaftBind = "127.0.0.1:0"
	s, err := raftmeta.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := c.Member(fi)
	m.RaftAddr = s.RaftAddr()
	// Through whichever node leads: with one of three down, a loaded
	// machine's leader can lose its lease in the middle of the join.
	if err := c.JoinMember(ctx, m, raftmeta.Caller{}); err != nil {
		t.Fatal(err)
	}
	_, leader := c.WaitForLeader(t)
	servers, _ := leader.Servers()
	for _, srv := range servers {
		if srv.ID == m.ID && srv.Address != m.RaftAddr {
			t.Fatalf("old address kept: %+v", servers)
		}
	}
	raftmetatest.WaitFor(t, 10*time.Second, func() error {
		if got := s.State().Members[m.ID].RaftAddr; got != m.RaftAddr {
			return fmt.Errorf("new node's record says %q", got)
		}
		return nil
	})
	// Another id at the leader's own address is refused.
	imposter := raftmeta.Member{ID: "imposter", RaftAddr: leader.RaftAddr()}
	if err := c.JoinMember(ctx, imposter, raftmeta.Caller{}); !errors.Is(err, raftmeta.ErrConflict) {
		t.Fatalf("imposter join: %v", err)
	}
}

func TestCluster_Leave(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	ctx := ctxT(t, 30*time.Second)
	li, leader := c.WaitForLeader(t)
	follower := c.Store((li + 1) % 3)
	var nle *raftmeta.NotLeaderError
	if err := follower.Leave(ctx, raftmeta.Caller{}); !errors.As(err, &nle) || nle.LeaderID != c.Member(li).ID {
		t.Fatalf("follower leave: %v", err)
	}

	if err := leader.Leave(ctx, raftmeta.Caller{}); err != nil {
		t.Fatal(err)
	}
	c.Kill(li)
	ni, next := c.WaitForLeader(t)
	if ni == li {
		t.Fatal("the node that left still leads")
	}
	servers, _ := next.Servers()
	if len(servers) != 2 || slices.ContainsFunc(servers, func(s raftmeta.Server) bool { return s.ID == c.Member(li).ID }) {
		t.Fatalf("servers after leave = %+v", servers)
	}
	if _, ok := next.State().Members[c.Member(li).ID]; ok {
		t.Fatal("record of the node that left is still there")
	}
	if _, err := c.Apply(ctx, raftmeta.SetTunables(raftmeta.Tunables{QueueFrames: 3})); err != nil {
		t.Fatal(err)
	}
}

// TestCluster_TransferLeadership: a leader about to stop hands over to
// another voter, and writes go on at once; elsewhere it does nothing.
func TestCluster_TransferLeadership(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	ctx := ctxT(t, 30*time.Second)
	li, leader := c.WaitForLeader(t)
	if err := c.Store((li + 1) % 3).TransferLeadership(ctx); err != nil {
		t.Fatalf("a follower's transfer: %v", err)
	}
	start := time.Now()
	if err := leader.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	if leader.IsLeader() {
		t.Fatal("still the leader after the transfer")
	}
	ni, _ := c.WaitForLeader(t)
	if ni == li {
		t.Fatal("the old leader leads again")
	}
	if _, err := c.Apply(ctx, raftmeta.SetTunables(raftmeta.Tunables{QueueFrames: 3})); err != nil {
		t.Fatal(err)
	}
	t.Logf("leadership moved from %s to %s; a write applied %s after the transfer began",
		c.Member(li).ID, c.Member(ni).ID, time.Since(start).Round(time.Millisecond))

	one := raftmetatest.NewCluster(t, 1)
	_, alone := one.WaitForLeader(t)
	if err := alone.TransferLeadership(ctx); err == nil {
		t.Fatal("a region of one transferred its leadership")
	}
}

func TestCluster_RetryAfterLeaderLossAppliesOnce(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	ctx := ctxT(t, 30*time.Second)
	li, leader := c.WaitForLeader(t)
	cmd := raftmeta.CreateApp(newApp("once"))
	cmd.RequestID = raftmeta.NewRequestID()
	first, err := leader.Apply(ctx, cmd)
	if err != nil {
		t.Fatal(err)
	}
	// The client never saw the answer; the leader dies; it retries.
	c.Kill(li)
	res, err := c.Apply(ctx, cmd)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if !res.Replayed || res.Index != first.Index {
		t.Fatalf("retry result %+v, first %+v", res, first)
	}
	_, next := c.WaitForLeader(t)
	n := 0
	for _, e := range next.State().Audit {
		if e.RequestID == cmd.RequestID {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("request applied %d times", n)
	}
}

// TestCluster_LeaderKillUnavailability kills the leader of a cluster with
// hashicorp/raft's default timings and measures how long writes fail.
// PUSHD_RAFT_KILL_RUNS=20 repeats it (about 5 s a run).
func TestCluster_LeaderKillUnavailability(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("default raft timings: seconds per run")
	}
	runs := 1
	if v := os.Getenv("PUSHD_RAFT_KILL_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("PUSHD_RAFT_KILL_RUNS=%q", v)
		}
		runs = n
	}
	c := raftmetatest.NewCluster(t, 3, raftmetatest.WithDefaultTimings())
	ctx := ctxT(t, time.Duration(runs)*time.Minute)
	var acked []string
	var gaps []time.Duration
	for run := range runs {
		li, _ := c.WaitForLeader(t)
		pre := fmt.Sprintf("pre-%d", run)
		if _, err := c.Apply(ctx, raftmeta.CreateApp(newApp(pre))); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, pre)

		cmd := raftmeta.CreateApp(newApp(fmt.Sprintf("post-%d", run)))
		cmd.RequestID = raftmeta.NewRequestID()
		start := time.Now()
		c.Kill(li)
		raftmetatest.WaitFor(t, 30*time.Second, func() error {
			_, s := c.Leader()
			if s == nil {
				return errors.New("no leader")
			}
			actx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			_, err := s.Apply(actx, cmd)
			return err
		})
		gap := time.Since(start)
		gaps = append(gaps, gap)
		acked = append(acked, fmt.Sprintf("post-%d", run))
		t.Logf("run %d: writes unavailable for %v", run, gap.Round(time.Millisecond))

		c.Restart(t, li)
		c.WaitConverged(t)
	}
	// Nothing acknowledged was lost, on any node.
	for i := range c.Len() {
		st := c.Store(i).State()
		for _, id := range acked {
			if _, ok := st.App(id); !ok {
				t.Fatalf("node %d lost acknowledged app %s", i, id)
			}
		}
	}
	// With default timings too, a degrade reaches every node well within
	// the appliance's 1 s promise.
	var chans []<-chan struct{}
	for i := range c.Len() {
		ch, cancel := c.Store(i).Changes()
		defer cancel()
		chans = append(chans, ch)
	}
	start := time.Now()
	if _, err := c.Apply(ctx, raftmeta.SetDegrade(raftmeta.Degrade{Priority: raftmeta.PriorityNormal})); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chans {
		for !c.Store(i).State().Degrade.Active {
			select {
			case <-ch:
			case <-time.After(time.Second - time.Since(start)):
				t.Fatalf("node %d: degrade not seen within 1 s", i)
			}
		}
		t.Logf("default timings: node %d saw degrade after %v", i, time.Since(start).Round(time.Millisecond))
	}

	slices.Sort(gaps)
	t.Logf("leader loss, default timings, %d runs: p50 %v, max %v", runs,
		gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond))
	if gaps[len(gaps)-1] > 10*time.Second {
		t.Fatalf("writes unavailable for %v", gaps[len(gaps)-1])
	}
}

func TestCluster_RestartedNodeCatchesUpFromLog(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	ctx := ctxT(t, 30*time.Second)
	li, _ := c.WaitForLeader(t)
	fi := (li + 1) % 3
	c.Kill(fi)
	for i := range 20 {
		if _, err := c.Apply(ctx, raftmeta.CreateApp(newApp(fmt.Sprintf("app%d", i)))); err != nil {
			t.Fatal(err)
		}
	}
	restarted := c.Restart(t, fi)
	c.WaitConverged(t)
	if n := len(restarted.State().Apps); n != 20 {
		t.Fatalf("restarted node has %d apps", n)
	}
	if st := restarted.Stats(); st.SnapshotIndex != 0 {
		t.Fatalf("caught up by snapshot %d, expected the log", st.SnapshotIndex)
	}
}

func TestCluster_RestartedNodeCatchesUpFromSnapshot(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3, raftmetatest.WithConfig(func(_ int, cfg *raftmeta.Config) {
		cfg.SnapshotThreshold = 16
		cfg.SnapshotInterval = 50 * time.Millisecond
		cfg.TrailingLogs = 4
		// Small segments: raft-wal frees whole segments only, and its
		// tail segment keeps serving entries below the first index.
		cfg.SegmentSize = 8 << 10
	}))
	ctx := ctxT(t, 60*time.Second)
	li, _ := c.WaitForLeader(t)
	fi := (li + 1) % 3
	killedAt := c.Store(fi).Stats().LastLogIndex
	c.Kill(fi)

	for i := 0; ; i++ {
		if _, err := c.Apply(ctx, raftmeta.CreateApp(newApp(fmt.Sprintf("app%d", i)))); err != nil {
			t.Fatal(err)
		}
		// Done once every live node has compacted past what the killed
		// node holds, so only a snapshot can bring it up.
		compacted := true
		for _, j := range []int{li, 3 - li - fi} {
			if s := c.Store(j); s != nil && s.Stats().FirstLogIndex <= killedAt+1 {
				compacted = false
			}
		}
		if compacted && i >= 40 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("logs never compacted past %d", killedAt)
		}
	}
	restarted := c.Restart(t, fi)
	c.WaitConverged(t)
	st := restarted.Stats()
	if st.SnapshotIndex <= killedAt {
		t.Fatalf("restarted node's snapshot index %d, killed at %d", st.SnapshotIndex, killedAt)
	}
	t.Logf("killed at index %d; restored from snapshot %d; leader log starts at %d",
		killedAt, st.SnapshotIndex, c.Store(li).Stats().FirstLogIndex)
}

func TestStore_SingleNodeRestartReplaysItsLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := raftmeta.Config{
		ID: "solo", DataDir: dir, RaftBind: "127.0.0.1:0",
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	}
	ctx := ctxT(t, 30*time.Second)
	s, err := raftmeta.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap(); err != nil {
		t.Fatalf("second bootstrap: %v", err)
	}
	if err := s.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	self := raftmeta.Member{ID: "solo", RaftAddr: s.RaftAddr(), AdminAddr: "127.0.0.1:9090"}
	if err := s.Join(ctx, self, raftmeta.Caller{}); err != nil {
		t.Fatal(err)
	}
	if lm, ok := s.LeaderMember(); !ok || lm.AdminAddr != self.AdminAddr || !lm.Voter {
		t.Fatalf("LeaderMember = %+v %v", lm, ok)
	}
	for i := range 5 {
		if _, err := s.Apply(ctx, raftmeta.SetMemberWeight("solo", i)); err != nil {
			t.Fatal(err)
		}
	}
	want, wantDigest := s.State(), s.Digest()
	cfg.RaftBind = s.RaftAddr()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := s.Apply(ctx, raftmeta.DegradeOff("")); !errors.Is(err, raftmeta.ErrClosed) {
		t.Fatalf("apply after close: %v", err)
	}

	s, err = raftmeta.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Bootstrap(); err != nil {
		t.Fatalf("bootstrap on restart: %v", err)
	}
	raftmetatest.WaitFor(t, 10*time.Second, func() error {
		if !reflect.DeepEqual(s.State(), want) || s.Digest() != wantDigest {
			return fmt.Errorf("state at index %d, want %d", s.State().Index, want.Index)
		}
		return nil
	})
	st := s.Stats()
	if st.State != "Leader" || st.Voters != 1 || st.Peers != 0 || st.StateIndex != want.Index || st.LeaderID != "solo" {
		t.Fatalf("stats = %+v", st)
	}

	// Close ends Changes subscriptions and fails waits.
	ch, _ := s.Changes()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for range ch {
	}
	if err := s.WaitForLeader(ctx); !errors.Is(err, raftmeta.ErrClosed) {
		t.Fatalf("wait after close: %v", err)
	}
}

func TestStore_OpenRefusesBadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, cfg := range []raftmeta.Config{
		{DataDir: dir, RaftBind: "127.0.0.1:0"},
		{ID: "a b", DataDir: dir, RaftBind: "127.0.0.1:0"},
		{ID: "n", RaftBind: "127.0.0.1:0"},
		{ID: "n", DataDir: dir, RaftBind: "nope"},
		{ID: "n", DataDir: dir, RaftBind: "0.0.0.0:0"},
		{ID: "n", DataDir: dir, RaftBind: ":0"},
		{ID: "n", DataDir: dir, RaftBind: "127.0.0.1:0", RaftAdvertise: "0.0.0.0:7000"},
		{ID: "n", DataDir: dir, RaftBind: "127.0.0.1:0", HeartbeatTimeout: time.Second, LeaderLeaseTimeout: 2 * time.Second},
	} {
		if s, err := raftmeta.Open(cfg); !errors.Is(err, raftmeta.ErrInvalid) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Open(%+v) = %v, want ErrInvalid", cfg, err)
		}
	}
	s, err := raftmeta.Open(raftmeta.Config{ID: "n", DataDir: dir, RaftBind: "0.0.0.0:0", RaftAdvertise: "127.0.0.1:7999"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.RaftAddr() != "127.0.0.1:7999" {
		t.Fatalf("RaftAddr = %q", s.RaftAddr())
	}
}

// recorder is a slog.Handler that keeps records for inspection.
type recorder struct {
	mu    sync.Mutex
	recs  []slog.Record
	attrs []slog.Attr
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(r.attrs...)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return nil
}
func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorderView{r: r, attrs: as}
}
func (r *recorder) WithGroup(string) slog.Handler { return r }

type recorderView struct {
	r     *recorder
	attrs []slog.Attr
}

func (v *recorderView) Enabled(context.Context, slog.Level) bool { return true }
func (v *recorderView) Handle(ctx context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(v.attrs...)
	return v.r.Handle(ctx, rec)
}
func (v *recorderView) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorderView{r: v.r, attrs: append(slices.Clone(v.attrs), as...)}
}
func (v *recorderView) WithGroup(string) slog.Handler { return v }

func TestStore_RaftDebugOutputStaysOut(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	s, err := raftmeta.Open(raftmeta.Config{
		ID: "solo", DataDir: t.TempDir(), RaftBind: "127.0.0.1:0", Logger: slog.New(rec),
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitForLeader(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	sawRaft := false
	for _, r := range rec.recs {
		var component, subsystem string
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "component":
				component = a.Value.String()
			case "subsystem":
				subsystem = a.Value.String()
			}
			return true
		})
		if component != "raftmeta" {
			t.Errorf("record %q without component=raftmeta", r.Message)
		}
		if subsystem == "raft" {
			sawRaft = true
		}
		if r.Level < slog.LevelInfo {
			t.Errorf("debug record reached the logger: %s %q", r.Level, r.Message)
		}
	}
	if !sawRaft {
		t.Error("raft's own messages never reached the logger")
	}
}

// BenchmarkStore_Apply3Nodes measures a committed write on a 3-node
// cluster over loopback TCP with raft-wal fsyncs.
func BenchmarkStore_Apply3Nodes(b *testing.B) {
	c := raftmetatest.NewCluster(b, 3)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if _, err := c.Apply(ctx, raftmeta.SetMemberWeight("node0", i)); err != nil {
			b.Fatal(err)
		}
	}
}
