package streamstest_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/regiontls"
	"github.com/pushd/pushd/streams/streamstest"
)

func TestServer_RestartKeepsData(t *testing.T) {
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
