package appliance

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
)

// TestReady_NothingServedBeforeTheMetadataCaughtUp: a node whose Raft
// store has no leader yet (as a restarted node before it hears from one)
// answers every device and health check with a retryable "starting", and
// its heartbeat keeps dispatch away; once its metadata syncs it serves.
// (The push API's answer while starting: appliance/pushapi's tests.)
func TestReady_NothingServedBeforeTheMetadataCaughtUp(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t)
	meta, err := raftmeta.Open(raftmeta.Config{ID: "solo", DataDir: t.TempDir(), RaftBind: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = meta.Close() })
	cfg := testConfig()
	cfg.NodeID, cfg.Apps, cfg.WSAddr, cfg.TCPAddr = "solo", nil, "", ""
	store := streams.New(srv.Client(t), streams.Config{})
	n, err := New(cfg, Deps{Store: store, Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stopServing := serveConns(n, ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		stopServing()
	})

	if code, h := healthOf(t, n); code != http.StatusServiceUnavailable || h.Status != "starting" {
		t.Fatalf("healthz before the metadata caught up: %d %+v", code, h)
	}
	c := dialRaw(t, deviceURL(n))
	f := hello(t, c, &wire.Hello{Device: "phone", Token: issue(t, "phone")})
	if e, ok := f.(*wire.Error); !ok || e.Code != wire.CodeUnavailable {
		t.Fatalf("HELLO to a starting node: %#v, want ERROR unavailable", f)
	}
	poll.Until(t, 5*time.Second, func() error {
		live, _, err := store.Nodes(context.Background())
		if err != nil || len(live) != 1 || live[0].Refusing != "starting" {
			return fmt.Errorf("heartbeats %+v (%v): want solo refusing as starting", live, err)
		}
		return nil
	})

	if err := meta.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Ready():
	case <-time.After(15 * time.Second):
		t.Fatal("not ready 15 s after its metadata had a leader")
	}
	if code, h := healthOf(t, n); code != http.StatusOK {
		t.Fatalf("healthz once ready: %d %+v", code, h)
	}
	poll.Until(t, 5*time.Second, func() error {
		live, _, err := store.Nodes(context.Background())
		if err != nil || len(live) != 1 || live[0].Refusing != "" {
			return fmt.Errorf("heartbeats %+v (%v): want solo taking devices", live, err)
		}
		return nil
	})
}
