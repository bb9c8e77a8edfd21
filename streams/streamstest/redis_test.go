package streamstest_test

import (
	"context"
	"runtime"
	"testing"
	"time"

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
