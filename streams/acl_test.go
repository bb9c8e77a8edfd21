package streams

import (
	"fmt"
	"testing"
	"time"

	"github.com/pushd/pushd/regiontls"
	"github.com/pushd/pushd/streams/streamstest"
)

// newRegionEnv is a testEnv on Redis as a region runs it: TLS only with
// client certificates of a CA, and the ACL systemd/redis-pushd.acl ships,
// the Store logged in as pushd's user. It is one server whatever
// PUSHD_TEST_REDIS says: the shipped ACL is for one Redis host
// (docs/operations.md), and a cluster under it would need users of its
// own for its bus and for redis-cli --cluster create.
func newRegionEnv(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	ca, err := regiontls.NewCA("streams test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const password = "streams-test-password"
	return envOn(t, streamstest.StartRedis(t, streamstest.TLS(streamstest.ServiceTLS(t, dir, ca)),
		streamstest.ACL(streamstest.PushdACL(t, dir, password), "pushd", password)), cfg)
}

// TestStore_EveryCallAsPushdsACLUserOverTLS: every Store call the
// appliance makes works as pushd's ACL user over TLS: a device's inbox
// and route, node delivery streams and the take-over of a dead node's.
// The ACL refusing one command a script runs would fail it here rather
// than in a region.
func TestStore_EveryCallAsPushdsACLUserOverTLS(t *testing.T) {
	t.Parallel()
	env := newRegionEnv(t, Config{ClaimMinIdle: time.Millisecond, NodeTTL: time.Hour})
	s := env.store
	ctx := testCtx(t)
	check := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s as pushd's ACL user: %v", what, err)
		}
	}

	check("ping", s.Ping(ctx))
	app, err := s.Append(ctx, msg("m-1"), []string{"a", "b"})
	check("append", err)
	check("append a duplicate", errOf(s.Append(ctx, msg("m-1"), []string{"a"})))
	epoch, _, res, err := s.Open(ctx, "a", "n1", Position{}, 10)
	check("open", err)
	if len(res.Entries) != 1 || res.Entries[0].Seq != app[0].Seq {
		t.Fatalf("open a: %+v, want m-1", res)
	}
	check("resume", errOf(s.Resume(ctx, "b", Position{}, 10)))
	check("read many", errOf(s.ReadMany(ctx, []ReadRequest{{Device: "a", Epoch: res.Epoch}, {Device: "b"}})))
	acked, err := s.AckMany(ctx, []AckRequest{{Device: "a", Epoch: res.Epoch, Seq: app[0].Seq}})
	check("ack many", err)
	if !acked[0] {
		t.Fatal("ack of a's m-1 not applied")
	}
	info, err := s.Device(ctx, "a")
	check("device", err)
	if info.Acked != app[0].Seq || info.Route.Node != "n1" {
		t.Fatalf("device a: %+v", info)
	}
	route := Route{Node: "n1", Epoch: epoch}
	check("claim route", errOf3(s.ClaimRoute(ctx, "b", "n1")))
	check("routes", errOf(s.Routes(ctx, []string{"a", "b"})))
	check("refresh routes", errOf(s.RefreshRoutes(ctx, []string{"a"}, []Route{route})))
	check("release route", errOf(s.ReleaseRoute(ctx, "a", route)))
	check("release routes", errOf(s.ReleaseRoutes(ctx, []string{"b"}, []Route{{Node: "n1", Epoch: 1}})))

	check("heartbeat", errOf(s.Heartbeat(ctx, NodeInfo{ID: "dead"})))
	check("nodes", errOf3(s.Nodes(ctx)))
	check("ensure group", s.EnsureGroup(ctx, "dead"))
	check("deliver", s.Deliver(ctx, map[string][][]byte{"dead": {[]byte("d1"), []byte("d2")}}))
	read, err := s.ReadDeliveries(ctx, "dead", 1, 0)
	check("read deliveries", err)
	check("pending deliveries", errOf(s.PendingDeliveries(ctx, "dead", 10)))
	check("ack deliveries", s.AckDeliveries(ctx, "dead", ids(read)))
	taken, err := s.TakeOver(ctx, "dead", "live", 10)
	check("take over", err)
	if fmt.Sprint(blobs(taken)) != "[d2]" {
		t.Fatalf("took over %q, want [d2]", blobs(taken))
	}
	check("ack the taken", s.AckDeliveries(ctx, "dead", ids(taken)))
	mustDo(t, env.rdb.Del(ctx, heartbeatKey("dead")))
	check("retire node", s.RetireNode(ctx, "dead"))
}

// TestStore_HeartbeatAfterRedisRestartAsPushdsACLUser: the heartbeat's
// check that Redis is the same process (INFO's run_id, read inside the
// script) works under pushd's ACL, so a restart or failover that kept the
// heartbeat key still makes the node re-check its routes at once. The ACL
// refusing INFO (it is in @dangerous) would skip the check silently.
func TestStore_HeartbeatAfterRedisRestartAsPushdsACLUser(t *testing.T) {
	t.Parallel()
	env := newRegionEnv(t, Config{})
	mustHeartbeat(t, env.store, "n1", false, "first")
	mustHeartbeat(t, env.store, "n1", true, "second")
	env.srv.Restart()
	if env.rdb.Exists(testCtx(t), heartbeatKey("n1")).Val() != 1 {
		t.Fatal("heartbeat key lost in the restart: the test would not show the run id check")
	}
	mustHeartbeat(t, env.store, "n1", false, "after a restart")
	mustHeartbeat(t, env.store, "n1", true, "next")
}

func errOf3[A, B any](_ A, _ B, err error) error { return err }
