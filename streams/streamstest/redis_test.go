package streamstest_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/regiontls"
	"github.com/pushd/pushd/streams/streamstest"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestServer_RestartKeepsData(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	got, err := rdb.Get(ctx, "k").Result()
	if err != nil || got != "v" {
		t.Fatalf("after restart: %q, %v; want v", got, err)
	}
}

func TestServer_StopAndPauseFailFast(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t, streamstest.AppendFsync("everysec"))
	rdb := srv.Client(t)

	srv.Pause()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	start := time.Now()
	err := rdb.Ping(ctx).Err()
	cancel()
	if err == nil {
		t.Fatal("PING to a paused server succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("PING to a paused server took %v", d)
	}
	srv.Resume()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING after Resume: %v", err)
	}

	srv.Stop()
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Fatal("PING to a stopped server succeeded")
	}
	srv.Restart()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
}

func TestServer_MissingBinaryFails(t *testing.T) {
	t.Parallel()
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		streamstest.StartRedis(ft, streamstest.Binary("/nonexistent/redis-server"))
	}()
	<-done
	if !ft.failed {
		t.Fatal("StartRedis with a missing binary did not fail the test")
	}
}

// fatalRecorder records Fatalf instead of failing the real test; Fatalf ends
// the goroutine like testing.T's does.
type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.failed = true
	f.TB.Logf("recorded fatal: "+format, args...)
	runtime.Goexit()
}

// TestServer_TLSAndACL: a server with TLS and pushd's ACL takes Client's
// connections (TLS, a client certificate, pushd's user) on pushd's keys,
// restarts the same way, and refuses a plain connection.
func TestServer_TLSAndACL(t *testing.T) {
	t.Parallel()
	ca, err := regiontls.NewCA("streamstest test CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	srv := streamstest.StartRedis(t, streamstest.TLS(streamstest.ServiceTLS(t, dir, ca)),
		streamstest.ACL(streamstest.PushdACL(t, dir, "pw"), "pushd", "pw"))
	if !strings.HasPrefix(srv.URL(), "rediss://") {
		t.Fatalf("URL %s", srv.URL())
	}
	rdb := srv.Client(t)
	ctx := context.Background()
	if err := rdb.Set(ctx, "pushd:k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "other", "v", 0).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("a key outside pushd's: %v", err)
	}
	srv.Restart()
	if got, err := rdb.Get(ctx, "pushd:k").Result(); err != nil || got != "v" {
		t.Fatalf("after restart: %q, %v", got, err)
	}
	plain := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "pushd", Password: "pw", MaxRetries: -1})
	defer plain.Close()
	if err := plain.Ping(ctx).Err(); err == nil {
		t.Fatal("a plain connection got through")
	}
}

// A cluster of three primaries serves keys of many hash tags from all
// three, and keeps them across a restart of every node.
func TestCluster_ThreePrimariesKeepDataAcrossRestart(t *testing.T) {
	t.Parallel()
	c := streamstest.StartCluster(t)
	if n := len(c.Nodes()); n != 3 {
		t.Fatalf("%d nodes, want 3", n)
	}
	rdb := c.Client(t)
	ctx := testCtx(t)
	for i := 0; i < 30; i++ {
		if err := rdb.Set(ctx, fmt.Sprintf("k{%d}", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// ForEachMaster calls the function on every primary at once.
	var primaries atomic.Int32
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		if err == nil && n == 0 {
			err = fmt.Errorf("%s holds no key", m.Options().Addr)
		}
		primaries.Add(1)
		return err
	})
	if err != nil || primaries.Load() != 3 {
		t.Fatalf("%d primaries: %v", primaries.Load(), err)
	}
	c.Restart()
	poll.Until(t, 10*time.Second, func() error {
		v, err := rdb.Get(ctx, "k{29}").Int()
		if err == nil && v != 29 {
			err = fmt.Errorf("k{29} = %d", v)
		}
		return err
	})
}

// Replicas(1) gives each of the three primaries an in-sync replica.
func TestCluster_Replicas(t *testing.T) {
	t.Parallel()
	c := streamstest.StartCluster(t, streamstest.Replicas(1))
	rdb := c.Client(t)
	ctx := testCtx(t)
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		info, err := m.Info(ctx, "replication").Result()
		if err == nil && !strings.Contains(info, "connected_slaves:1\r") {
			err = fmt.Errorf("%s: %s", m.Options().Addr, info)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(c.URL(), ","); got != 5 {
		t.Fatalf("URL %s lists %d nodes, want 6", c.URL(), got+1)
	}
}

// Killing the primary makes the Sentinels promote the replica, and a
// client built from the Sentinel URL follows by itself; the old primary,
// restarted, rejoins as a replica.
func TestSentinel_FailsOverAndTheClientFollows(t *testing.T) {
	t.Parallel()
	s := streamstest.StartSentinel(t)
	rdb := s.Connect(t)
	ctx := testCtx(t)
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.Do(ctx, "WAIT", 1, 1000).Int(); err != nil || n != 1 {
		t.Fatalf("WAIT: %d %v", n, err)
	}
	old := s.Primary()
	if old != s.Servers()[0] {
		t.Fatalf("primary %s, want the first server", old.Addr())
	}
	old.Stop()
	start := time.Now()
	primary := s.WaitFailover(old, 30*time.Second)
	t.Logf("failover to %s after %v", primary.Addr(), time.Since(start).Round(time.Millisecond))
	poll.Until(t, 10*time.Second, func() error {
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		v, err := rdb.Get(rctx, "k").Result()
		if err == nil && v != "v" {
			err = fmt.Errorf("k = %q", v)
		}
		return err
	})
	old.Restart()
	s.WaitHealthy(30 * time.Second)
	if s.Primary() != primary {
		t.Fatalf("primary moved again to %s", s.Primary().Addr())
	}
}
