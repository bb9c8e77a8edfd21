package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
)

// mustHeartbeat sends one heartbeat for node and fails the test unless its
// continued result is want.
func mustHeartbeat(t *testing.T, s *Store, node string, want bool, when string) {
	t.Helper()
	got, err := s.Heartbeat(testCtx(t), NodeInfo{ID: node, Conns: 7})
	if err != nil {
		t.Fatalf("heartbeat %s %s: %v", node, when, err)
	}
	if got != want {
		t.Fatalf("heartbeat %s %s: continued %v, want %v", node, when, got, want)
	}
}

// lostReplyHeartbeat runs heartbeat.lua as a Heartbeat call would, but
// keeps its result from the Store: a call that Redis applied and whose
// reply never came back. It returns the script's answer.
func lostReplyHeartbeat(t *testing.T, env *testEnv, node, token string) int64 {
	t.Helper()
	env.store.hbMu.Lock()
	after := env.store.hbLast[node]
	env.store.hbMu.Unlock()
	b, err := json.Marshal(NodeInfo{ID: node, Updated: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	n, err := heartbeatScript.Run(testCtx(t), env.rdb, []string{heartbeatKey(node)},
		b, token, after, env.store.cfg.NodeTTL.Milliseconds()).Int64()
	if err != nil {
		t.Fatalf("heartbeat script: %v", err)
	}
	return n
}

func TestStore_HeartbeatReportsContinuity(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	mustHeartbeat(t, env.store, "n1", false, "first")
	mustHeartbeat(t, env.store, "n1", true, "second")
	mustHeartbeat(t, env.store, "n1", true, "third")
	// Node ids are tracked apart.
	mustHeartbeat(t, env.store, "n2", false, "first of n2")
	mustHeartbeat(t, env.store, "n1", true, "after n2's")

	flushAll(t, env.rdb)
	mustHeartbeat(t, env.store, "n1", false, "after FLUSHALL")
	mustHeartbeat(t, env.store, "n1", true, "after the FLUSHALL was reported")
	if !env.rdb.SIsMember(ctx, nodesKey, "n1").Val() {
		t.Fatal("heartbeat after FLUSHALL did not add the node to the node set again")
	}

	// The node's info still reads back as it was sent (n2 went with the
	// FLUSHALL).
	live, _, err := env.store.Nodes(ctx)
	if err != nil || len(live) != 1 || live[0].ID != "n1" || live[0].Conns != 7 {
		t.Fatalf("nodes: %+v %v", live, err)
	}
	if ttl := env.rdb.PTTL(ctx, heartbeatKey("n1")).Val(); ttl <= 9*time.Second || ttl > 10*time.Second {
		t.Fatalf("heartbeat ttl %v, want NodeTTL 10s", ttl)
	}
}

func TestStore_HeartbeatAfterKeyExpired(t *testing.T) {
	t.Parallel()
	// A node that stalled for longer than NodeTTL.
	env := newEnv(t, Config{NodeTTL: 500 * time.Millisecond})
	ctx := testCtx(t)
	mustHeartbeat(t, env.store, "n1", false, "first")
	mustHeartbeat(t, env.store, "n1", true, "second")
	poll.Until(t, 5*time.Second, func() error {
		if env.rdb.Exists(ctx, heartbeatKey("n1")).Val() != 0 {
			return errors.New("heartbeat key not expired yet")
		}
		return nil
	})
	mustHeartbeat(t, env.store, "n1", false, "after the key expired")
	mustHeartbeat(t, env.store, "n1", true, "next")
}

func TestStore_HeartbeatAfterRedisRestart(t *testing.T) {
	t.Parallel()
	// appendfsync always: the restarted server has every write, heartbeat
	// included, but it is another process, and under everysec it might not
	// have had the routes.
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	mustHeartbeat(t, env.store, "n1", false, "first")
	mustHeartbeat(t, env.store, "n1", true, "second")
	env.srv.Restart()
	if env.rdb.Exists(ctx, heartbeatKey("n1")).Val() != 1 {
		t.Fatal("heartbeat key lost in the restart: the test would not show the run id check")
	}
	mustHeartbeat(t, env.store, "n1", false, "after a restart")
	mustHeartbeat(t, env.store, "n1", true, "next")
}

func TestStore_HeartbeatAfterRollback(t *testing.T) {
	t.Parallel()
	// Redis went back to an older heartbeat of this node without a restart
	// of the serving process (here by RESTORE; in the field a failover to a
	// lagging replica, which the run id catches as well).
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	mustHeartbeat(t, env.store, "n1", false, "first")
	dump := env.rdb.Dump(ctx, heartbeatKey("n1"))
	mustDo(t, dump)
	mustHeartbeat(t, env.store, "n1", true, "second")
	mustDo(t, env.rdb.RestoreReplace(ctx, heartbeatKey("n1"), 10*time.Second, dump.Val()))
	mustHeartbeat(t, env.store, "n1", false, "after a rollback")
	mustHeartbeat(t, env.store, "n1", true, "next")

	// A value without the script's fields (an older pushd) is no proof.
	mustDo(t, env.rdb.Set(ctx, heartbeatKey("n1"), `{"ID":"n1"}`, 10*time.Second))
	mustHeartbeat(t, env.store, "n1", false, "over a foreign value")
}

func TestStore_HeartbeatSameNodeIDOnTwoStores(t *testing.T) {
	t.Parallel()
	// A second process (or a restarted one) with the same node id: its first
	// call is false although the key exists, and two processes that take
	// turns see each other's heartbeats, never their own.
	env := newEnv(t, Config{})
	other := New(env.rdb, Config{})
	mustHeartbeat(t, env.store, "n1", false, "first")
	mustHeartbeat(t, env.store, "n1", true, "second")
	mustHeartbeat(t, other, "n1", false, "first on another store")
	mustHeartbeat(t, env.store, "n1", false, "after the other store's")
	mustHeartbeat(t, other, "n1", false, "after the first store's")

	// A Store's first call is false even over a value claiming continuity.
	run := nodeFor(t, env.rdb, heartbeatKey("n1")).Info(testCtx(t), "server").Val()
	i := strings.Index(run, "run_id:") + len("run_id:")
	forged := `{"ID":"n1","token":"","after":"","redis_run_id":"` + run[i:i+40] + `","continued":true}`
	mustDo(t, env.rdb.Set(testCtx(t), heartbeatKey("n1"), forged, 10*time.Second))
	mustHeartbeat(t, New(env.rdb, Config{}), "n1", false, "first on a third store")
}

func TestStore_HeartbeatReportsLossFoundByALostReply(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	mustHeartbeat(t, env.store, "n1", false, "first")
	mustHeartbeat(t, env.store, "n1", true, "second")

	// Unbroken: calls whose replies were lost carry the chain forward.
	if n := lostReplyHeartbeat(t, env, "n1", "00000000000000a1"); n != 1 {
		t.Fatalf("lost-reply call on an unbroken chain: %d, want 1", n)
	}
	if n := lostReplyHeartbeat(t, env, "n1", "00000000000000a2"); n != 1 {
		t.Fatalf("second lost-reply call: %d, want 1", n)
	}
	mustHeartbeat(t, env.store, "n1", true, "after two lost replies")

	// Redis loses the key; the call that finds it is applied but its reply
	// is lost, and so is the next one's. The next call the Store hears back
	// from must still report the loss.
	flushAll(t, env.rdb)
	if n := lostReplyHeartbeat(t, env, "n1", "00000000000000b1"); n != 0 {
		t.Fatalf("lost-reply call after FLUSHALL: %d, want 0", n)
	}
	// go-redis resends a call after a read timeout: the resent one finds
	// its own first attempt's heartbeat and must answer as it did.
	if n := lostReplyHeartbeat(t, env, "n1", "00000000000000b1"); n != 0 {
		t.Fatalf("resent call: %d, want the first answer 0", n)
	}
	if n := lostReplyHeartbeat(t, env, "n1", "00000000000000b2"); n != 0 {
		t.Fatalf("lost-reply call after the one that found the loss: %d, want 0", n)
	}
	mustHeartbeat(t, env.store, "n1", false, "after the lost replies that found a loss")
	mustHeartbeat(t, env.store, "n1", true, "next")
}

func TestStore_HeartbeatFailureKeepsTheLastToken(t *testing.T) {
	t.Parallel()
	// A failed call does not advance the Store's view: when Redis comes back
	// with its data, the next call still proves continuity; when it comes
	// back without it, the next call says so.
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	mustHeartbeat(t, env.store, "n1", false, "first")
	mustHeartbeat(t, env.store, "n1", true, "second")
	env.srv.Pause()
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := env.store.Heartbeat(short, NodeInfo{ID: "n1"})
	cancel()
	env.srv.Resume()
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("heartbeat to a paused Redis: %v, want ErrUnavailable", err)
	}
	poll.Until(t, 5*time.Second, func() error { return env.store.Ping(ctx) })
	// The paused call may have run once Redis woke: either way the chain
	// from the last answered call is unbroken.
	mustHeartbeat(t, env.store, "n1", true, "after a failed call")
	mustDo(t, env.rdb.Del(ctx, heartbeatKey("n1")))
	mustHeartbeat(t, env.store, "n1", false, "after the key was deleted")
}

func TestStore_HeartbeatValueKeepsNodeInfo(t *testing.T) {
	t.Parallel()
	// The stored value is the NodeInfo JSON plus the script's fields, so an
	// older pushd's Nodes still decodes it.
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	info := NodeInfo{ID: "n1", DeviceAddr: "10.0.0.1:8080", TCPAddr: `"}{%s`, Conns: 3, Updated: time.UnixMilli(1700000000000).UTC()}
	if _, err := env.store.Heartbeat(ctx, info); err != nil {
		t.Fatal(err)
	}
	v := env.rdb.Get(ctx, heartbeatKey("n1")).Val()
	var got NodeInfo
	if err := json.Unmarshal([]byte(v), &got); err != nil || !got.Updated.Equal(info.Updated) {
		t.Fatalf("stored value %s: %v", v, err)
	}
	got.Updated = info.Updated
	if got != info {
		t.Fatalf("decoded %+v, want %+v", got, info)
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(v), &fields); err != nil {
		t.Fatal(err)
	}
	run := nodeFor(t, env.rdb, heartbeatKey("n1")).Info(ctx, "server").Val()
	if id, _ := fields["redis_run_id"].(string); id == "" || !strings.Contains(run, "run_id:"+id) {
		t.Fatalf("redis_run_id %v not the server's", fields["redis_run_id"])
	}
	if fmt.Sprint(fields["continued"]) != "false" || fields["after"] != "" || len(fmt.Sprint(fields["token"])) != 16 {
		t.Fatalf("script fields %v", fields)
	}
}

// TestStore_LeaveMakesTheNodeDeadAtOnce: after Leave the node is dead to
// Nodes, without waiting NodeTTL, its stream can be taken over and
// retired, and its next heartbeat brings it back.
func TestStore_LeaveMakesTheNodeDeadAtOnce(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{NodeTTL: time.Hour})
	ctx := testCtx(t)
	s := env.store
	mustHeartbeat(t, s, "n1", false, "first")
	mustHeartbeat(t, s, "n2", false, "first")
	if err := s.EnsureGroup(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Leave(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	live, dead, err := s.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 1 || live[0].ID != "n2" || len(dead) != 1 || dead[0] != "n1" {
		t.Fatalf("live %v, dead %v after n1 left", live, dead)
	}
	if err := s.Deliver(ctx, map[string][][]byte{"n1": {[]byte("late")}}); err != nil {
		t.Fatal(err)
	}
	ds, err := s.TakeOver(ctx, "n1", "n2", 10)
	if err != nil || len(ds) != 1 || string(ds[0].Blob) != "late" {
		t.Fatalf("takeover of the left node: %v, %v", ds, err)
	}
	if err := s.AckDeliveries(ctx, "n1", []string{ds[0].ID}); err != nil {
		t.Fatal(err)
	}
	if err := s.RetireNode(ctx, "n1"); err != nil {
		t.Fatalf("retire the left node: %v", err)
	}
	mustHeartbeat(t, s, "n1", false, "after leaving")
	if live, _, _ := s.Nodes(ctx); len(live) != 2 {
		t.Fatalf("live %v after n1 came back", live)
	}
	if err := s.Leave(ctx, "bad{id}"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("leave with a bad id: %v", err)
	}
}
