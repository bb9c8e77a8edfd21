package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams/streamstest"
)

// An append returns only once a replica has its writes; a replica that
// does not confirm in time fails it with ErrNotReplicated (an
// ErrUnavailable), also when the call is a retry that finds the message
// already stored, and the retry succeeds once the replica is back.
func TestStore_AppendWaitsForAReplica(t *testing.T) {
	t.Parallel()
	primary := streamstest.StartRedis(t)
	replica := streamstest.StartReplica(t, primary)
	rdb := primary.Connect(t)
	// A replica answers in a millisecond or two, but a busy machine can
	// stretch that: s waits long for the calls that must be confirmed,
	// short for those that must not.
	s := New(rdb, Config{WaitReplicas: 1, WaitTimeout: 5 * time.Second})
	short := New(rdb, Config{WaitReplicas: 1, WaitTimeout: 200 * time.Millisecond})
	ctx := testCtx(t)
	onReplica := replica.Client(t)

	res, err := s.Append(ctx, msg("m-1"), []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	// Confirmed means on the replica already, not eventually.
	if n := onReplica.XLen(ctx, inboxKey("b")).Val(); n != 1 {
		t.Fatalf("replica holds %d entries of b after a confirmed append, want 1", n)
	}

	replica.Pause()
	start := time.Now()
	_, err = short.Append(ctx, msg("m-2"), []string{"a", "b"})
	took := time.Since(start)
	if !errors.Is(err, ErrNotReplicated) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("append with the replica paused: %v, want ErrNotReplicated and ErrUnavailable", err)
	}
	if took < 200*time.Millisecond || took > 2*time.Second {
		t.Fatalf("append with the replica paused failed after %v, want about the 200ms WAIT timeout", took)
	}
	// The primary has it: the error says "not proven", not "not written".
	if n := rdb.XLen(ctx, inboxKey("a")).Val(); n != 2 {
		t.Fatalf("primary holds %d entries of a, want 2", n)
	}
	// A retry finds the message by its id and writes nothing new, yet
	// must not pass for confirmed: the first attempt's writes are still
	// on the primary only.
	if _, err := short.Append(ctx, msg("m-2"), []string{"a", "b"}); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("retried append with the replica paused: %v, want ErrNotReplicated", err)
	}

	replica.Resume()
	again, err := s.Append(ctx, msg("m-2"), []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range again {
		if !a.Duplicate || a.Seq != res[i].Seq+1 {
			t.Fatalf("retry after the replica came back: %+v, want the first attempt's seq %d, duplicate", a, res[i].Seq+1)
		}
	}
	if n := onReplica.XLen(ctx, inboxKey("a")).Val(); n != 2 {
		t.Fatalf("replica holds %d entries of a, want 2", n)
	}
}

// With no replica at all, nothing is ever confirmed: appends and the
// reads that hand entries to devices fail; the other calls do not wait.
func TestStore_WithoutAReplicaNothingIsConfirmed(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t)
	s := New(srv.Connect(t), Config{WaitReplicas: 1, WaitTimeout: 50 * time.Millisecond})
	ctx := testCtx(t)
	if _, err := s.Append(ctx, msg("m"), []string{"a"}); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("append: %v, want ErrNotReplicated", err)
	}
	epoch, _, _, err := s.Open(ctx, "a", "n1", Position{}, 0)
	if !errors.Is(err, ErrNotReplicated) || epoch == 0 {
		t.Fatalf("open: epoch %d, %v; want the claimed epoch and ErrNotReplicated", epoch, err)
	}
	if _, err := s.ReadMany(ctx, []ReadRequest{{Device: "a"}}); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("read: %v, want ErrNotReplicated", err)
	}
	if ok, err := s.ReleaseRoute(ctx, "a", Route{Node: "n1", Epoch: epoch}); err != nil || !ok {
		t.Fatalf("release: %v %v", ok, err)
	}
	if _, err := s.Heartbeat(ctx, NodeInfo{ID: "n1"}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
}

// An entry an append wrote but no replica has must not reach a device: a
// failover could give its seq to another message, which the device would
// then drop as a repeat. The reads that hand entries out wait for the
// replicas to have what they read. This pins that Redis (7.0) counts a
// connection's reads in WAIT: it fails if a Redis counts only writes.
func TestStore_ReadsWaitForReplicas(t *testing.T) {
	t.Parallel()
	primary := streamstest.StartRedis(t)
	replica := streamstest.StartReplica(t, primary)
	rdb := primary.Connect(t)
	fast := New(rdb, Config{})
	strict := New(rdb, Config{WaitReplicas: 1, WaitTimeout: 5 * time.Second})
	short := New(rdb, Config{WaitReplicas: 1, WaitTimeout: 200 * time.Millisecond})
	ctx := testCtx(t)
	first, err := strict.Append(ctx, msg("m-1"), []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	replica.Pause()
	// Another writer's append the replica never got (a fast node's, or
	// one whose WAIT has not answered yet).
	if _, err := fast.Append(ctx, msg("m-2"), []string{"a"}); err != nil {
		t.Fatal(err)
	}
	cur := Position{Epoch: first[0].Epoch, Seq: 0}
	if _, err := short.ReadMany(ctx, []ReadRequest{{Device: "a", Epoch: cur.Epoch}}); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("read with the replica behind: %v, want ErrNotReplicated", err)
	}
	if _, err := short.Resume(ctx, "a", cur, 0); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("resume with the replica behind: %v, want ErrNotReplicated", err)
	}
	if _, _, _, err := short.Open(ctx, "a", "n1", cur, 0); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("open with the replica behind: %v, want ErrNotReplicated", err)
	}
	replica.Resume()
	res, err := strict.ReadMany(ctx, []ReadRequest{{Device: "a", Epoch: cur.Epoch}})
	if err != nil || !equalSeqs(seqs(res[0].Entries), 1, 2) {
		t.Fatalf("read with the replica back: %+v %v", res, err)
	}
}

// On a cluster each primary an append writes to waits for its own
// replica: a shard whose replica is paused fails the appends that touch
// it, and only those.
func TestStore_AppendWaitsOnEveryPrimaryOfACluster(t *testing.T) {
	t.Parallel()
	c := streamstest.StartCluster(t, streamstest.Replicas(1))
	rdb := c.Client(t)
	s := New(rdb, Config{WaitReplicas: 1, WaitTimeout: 5 * time.Second})
	short := New(rdb, Config{WaitReplicas: 1, WaitTimeout: 200 * time.Millisecond})
	ctx := testCtx(t)
	byPrimary := devicesByPrimary(t, rdb, 60)
	if len(byPrimary) != 3 {
		t.Fatalf("60 devices on %d primaries, want 3", len(byPrimary))
	}
	var all []string
	for _, ds := range byPrimary {
		all = append(all, ds...)
	}
	res, err := s.Append(ctx, msg("m-1"), all)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range res {
		if a.Device != all[i] || a.Seq != 1 {
			t.Fatalf("result %d: %+v", i, a)
		}
	}

	// Pause the replica of one primary.
	var paused string
	for addr := range byPrimary {
		paused = addr
		break
	}
	replicaOf(t, c, paused).Pause()
	others := slices.Concat(otherThan(byPrimary, paused)...)
	if _, err := s.Append(ctx, msg("m-2"), others); err != nil {
		t.Fatalf("append to the other primaries' devices: %v", err)
	}
	if _, err := short.Append(ctx, msg("m-3"), all); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("append touching %s: %v, want ErrNotReplicated", paused, err)
	}
}

// devicesByPrimary spreads n device ids over a cluster's primaries.
func devicesByPrimary(t *testing.T, rdb *redis.ClusterClient, n int) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for i := 0; i < n; i++ {
		d := fmt.Sprintf("d%d", i)
		m, err := rdb.MasterForKey(testCtx(t), inboxKey(d))
		if err != nil {
			t.Fatal(err)
		}
		out[m.Options().Addr] = append(out[m.Options().Addr], d)
	}
	return out
}

func otherThan(m map[string][]string, skip string) [][]string {
	var out [][]string
	for k, v := range m {
		if k != skip {
			out = append(out, v)
		}
	}
	return out
}

// replicaOf returns the cluster node replicating the primary at addr.
func replicaOf(t *testing.T, c *streamstest.Cluster, addr string) *streamstest.Server {
	t.Helper()
	_, port, _ := strings.Cut(addr, ":")
	for _, n := range c.Nodes() {
		info, err := n.Client(t).Info(testCtx(t), "replication").Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(info, "role:slave") && strings.Contains(info, "master_port:"+port+"\r") {
			return n
		}
	}
	t.Fatalf("no replica of %s", addr)
	return nil
}

// On a cluster a node's delivery stream and heartbeat live on the
// primary its {node} tag hashes to: nodes on different primaries see each
// other, deliver to each other, and one takes over and retires another.
func TestStore_NodeKeysOnDifferentPrimaries(t *testing.T) {
	t.Parallel()
	c := streamstest.StartCluster(t)
	rdb := c.Client(t)
	s := New(rdb, Config{NodeTTL: time.Second, ClaimMinIdle: time.Millisecond})
	ctx := testCtx(t)
	// Three node ids whose keys land on three different primaries.
	var nodes []string
	seen := map[string]bool{}
	for i := 0; len(nodes) < 3; i++ {
		id := fmt.Sprintf("node-%d", i)
		m, err := rdb.MasterForKey(ctx, heartbeatKey(id))
		if err != nil {
			t.Fatal(err)
		}
		if !seen[m.Options().Addr] {
			seen[m.Options().Addr] = true
			nodes = append(nodes, id)
		}
	}
	for _, n := range nodes {
		if _, err := s.Heartbeat(ctx, NodeInfo{ID: n}); err != nil {
			t.Fatal(err)
		}
		if err := s.EnsureGroup(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	live, dead, err := s.Nodes(ctx)
	if err != nil || len(live) != 3 || len(dead) != 0 {
		t.Fatalf("nodes: %v %v %v", live, dead, err)
	}
	// One pipeline to streams on three primaries.
	if err := s.Deliver(ctx, map[string][][]byte{nodes[0]: {[]byte("a")}, nodes[1]: {[]byte("b")}, nodes[2]: {[]byte("c")}}); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes[:2] {
		got, err := s.ReadDeliveries(ctx, n, 10, 0)
		if err != nil || len(got) != 1 || string(got[0].Blob) != string(rune('a'+i)) {
			t.Fatalf("%s read %v %v", n, got, err)
		}
		if err := s.AckDeliveries(ctx, n, []string{got[0].ID}); err != nil {
			t.Fatal(err)
		}
	}
	// nodes[2] stops heartbeating; nodes[0] takes over its stream.
	poll.Until(t, 10*time.Second, func() error {
		for _, n := range nodes[:2] {
			if _, err := s.Heartbeat(ctx, NodeInfo{ID: n}); err != nil {
				return err
			}
		}
		_, dead, err := s.Nodes(ctx)
		if err == nil && !slices.Equal(dead, nodes[2:]) {
			err = fmt.Errorf("dead %v", dead)
		}
		return err
	})
	got, err := s.TakeOver(ctx, nodes[2], nodes[0], 10)
	if err != nil || len(got) != 1 || string(got[0].Blob) != "c" {
		t.Fatalf("take over: %v %v", got, err)
	}
	if err := s.AckDeliveries(ctx, nodes[2], []string{got[0].ID}); err != nil {
		t.Fatal(err)
	}
	if err := s.RetireNode(ctx, nodes[2]); err != nil {
		t.Fatal(err)
	}
	if live, dead, err := s.Nodes(ctx); err != nil || len(live) != 2 || len(dead) != 0 {
		t.Fatalf("after retiring: %v %v %v", live, dead, err)
	}
}

// On a cluster the heartbeat script sees its own shard; a restart of any
// other primary must break continuity too, since that primary holds some
// of the node's routes.
func TestStore_HeartbeatSeesAnyPrimaryRestart(t *testing.T) {
	t.Parallel()
	c := streamstest.StartCluster(t)
	rdb := c.Client(t)
	s := New(rdb, Config{})
	mustHeartbeat(t, s, "n1", false, "first")
	mustHeartbeat(t, s, "n1", true, "second")
	own, err := rdb.MasterForKey(testCtx(t), heartbeatKey("n1"))
	if err != nil {
		t.Fatal(err)
	}
	var other *streamstest.Server
	for _, n := range c.Nodes() {
		if n.Addr() != own.Options().Addr {
			other = n
			break
		}
	}
	other.Restart()
	poll.Until(t, 10*time.Second, func() error {
		_, err := s.Heartbeat(testCtx(t), NodeInfo{ID: "probe"})
		return err
	})
	poll.Until(t, 10*time.Second, func() error {
		// Calls before the cluster serves every slot again may fail.
		got, err := s.Heartbeat(testCtx(t), NodeInfo{ID: "n1", Conns: 7})
		if err != nil {
			return err
		}
		if got {
			t.Fatalf("heartbeat after %s (not the heartbeat's shard) restarted: continued", other.Addr())
		}
		return nil
	})
	mustHeartbeat(t, s, "n1", true, "after the false one")
}

// Topology names the primary, its appendfsync and replicas, and on a
// cluster every primary with its slots.
func TestStore_Topology(t *testing.T) {
	t.Parallel()
	t.Run("primary and replica", func(t *testing.T) {
		primary := streamstest.StartRedis(t)
		replica := streamstest.StartReplica(t, primary)
		s := New(primary.Connect(t), Config{WaitReplicas: 1, WaitTimeout: time.Second})
		top, err := s.Topology(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if top.Cluster || len(top.Primaries) != 1 || top.WaitReplicas != 1 || top.WaitTimeout != time.Second {
			t.Fatalf("topology %+v", top)
		}
		p := top.Primaries[0]
		if p.Addr != primary.Addr() || p.Role != "master" || p.AppendFsync != "always" || len(p.RunID) != 40 || p.CPU <= 0 {
			t.Fatalf("primary %+v", p)
		}
		if len(p.Replicas) != 1 || p.Replicas[0].Addr != replica.Addr() || p.Replicas[0].State != "online" {
			t.Fatalf("replicas %+v", p.Replicas)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		c := streamstest.StartCluster(t, streamstest.AppendFsync("everysec"))
		s := New(c.Connect(t), Config{})
		top, err := s.Topology(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if !top.Cluster || len(top.Primaries) != 3 {
			t.Fatalf("topology %+v", top)
		}
		var slots []string
		for _, p := range top.Primaries {
			if p.AppendFsync != "everysec" || p.Role != "master" || p.Slots == "" || len(p.Replicas) != 0 {
				t.Fatalf("primary %+v", p)
			}
			slots = append(slots, p.Slots)
		}
		if slots[0] != "0-5460" || slots[2] != "10923-16383" {
			t.Fatalf("slots %v", slots)
		}
	})
}

// A Sentinel failover under appends that wait for a replica: every append
// confirmed before the primary was killed is on the new primary; while
// no primary answers, calls fail with ErrUnavailable by their deadline;
// the client finds the new primary by itself, appends succeed again with
// the other replica confirming them, and the next heartbeat reports the
// failover.
func TestStore_SentinelFailoverKeepsConfirmedAppends(t *testing.T) {
	t.Parallel()
	sen := streamstest.StartSentinel(t, streamstest.Replicas(2))
	rdb := sen.Connect(t)
	s := New(rdb, Config{WaitReplicas: 1, WaitTimeout: 2 * time.Second})
	mustHeartbeat(t, s, "n1", false, "first")
	mustHeartbeat(t, s, "n1", true, "second")

	confirmed := map[string][]uint64{}
	for i := 0; i < 50; i++ {
		d := fmt.Sprintf("d%d", i%10)
		res, err := s.Append(testCtx(t), msg(fmt.Sprintf("m-%d", i)), []string{d})
		if err != nil {
			t.Fatal(err)
		}
		confirmed[d] = append(confirmed[d], res[0].Seq)
	}
	old := sen.Primary()
	old.Stop()
	start := time.Now()
	// While the Sentinels decide, calls fail fast with ErrUnavailable.
	failed := 0
	for time.Since(start) < 500*time.Millisecond {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		t0 := time.Now()
		_, err := s.Append(ctx, msg("during"), []string{"d0"})
		cancel()
		if err == nil {
			t.Fatal("append confirmed with the primary dead and no failover yet")
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("append during the failover: %v, want ErrUnavailable", err)
		}
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("append during the failover took %v", d)
		}
		failed++
	}
	primary := sen.WaitFailover(old, 30*time.Second)
	// The client follows by itself: no new client, no restart.
	var back time.Duration
	poll.Until(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := s.Append(ctx, msg(fmt.Sprintf("after-%d", time.Now().UnixNano())), []string{"d0"})
		back = time.Since(start)
		return err
	})
	t.Logf("primary killed: %d appends refused, the Sentinels named %s, appends confirmed again %v after the kill",
		failed, primary.Addr(), back.Round(time.Millisecond))
	for d, seqs := range confirmed {
		r := mustResume(t, s, d, Position{}, 0)
		if len(r.Entries) < len(seqs) {
			t.Fatalf("%s: %d entries after the failover, %d were confirmed", d, len(r.Entries), len(seqs))
		}
		for i, seq := range seqs {
			if r.Entries[i].Seq != seq || r.Entries[i].ID != fmt.Sprintf("m-%d", seqToMsg(d, i)) {
				t.Fatalf("%s entry %d: seq %d id %s, want seq %d", d, i, r.Entries[i].Seq, r.Entries[i].ID, seq)
			}
		}
	}
	poll.Until(t, 10*time.Second, func() error {
		got, err := s.Heartbeat(testCtx(t), NodeInfo{ID: "n1"})
		if err == nil && got {
			t.Fatal("heartbeat after a failover: continued")
		}
		return err
	})
}

// seqToMsg names the i-th message appended to device d above (devices
// d0..d9 in turn).
func seqToMsg(d string, i int) int {
	var k int
	_, _ = fmt.Sscanf(d, "d%d", &k)
	return i*10 + k
}

// TestStore_OnACluster runs part of this suite against a Redis Cluster
// of three primaries in every run; CI runs all of it there too
// (PUSHD_TEST_REDIS=cluster, README).
func TestStore_OnACluster(t *testing.T) {
	t.Setenv(streamstest.TopologyEnv, "cluster")
	t.Run("AppendAssignsContiguousSeqsPerDevice", TestStore_AppendAssignsContiguousSeqsPerDevice)
	t.Run("ResumeAfterFlushAll", TestStore_ResumeAfterFlushAll)
	t.Run("OpenMatchesClaimThenResume", TestStore_OpenMatchesClaimThenResume)
	t.Run("TakeOverDrainsDeadNode", TestStore_TakeOverDrainsDeadNode)
}
