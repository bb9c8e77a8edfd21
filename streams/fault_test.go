package streams

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/internal/poll"
)

// Every operation against a dead or hung Redis must come back with
// ErrUnavailable by the caller's deadline, never hang.
func TestStore_FailsFastWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	last := appendN(t, env.store, "a", "m", 3)
	if err := env.store.EnsureGroup(testCtx(t), "n1"); err != nil {
		t.Fatal(err)
	}

	ops := map[string]func(ctx context.Context) error{
		"ping": env.store.Ping,
		"append": func(ctx context.Context) error {
			_, err := env.store.Append(ctx, msg("x"), []string{"a", "b"})
			return err
		},
		"resume": func(ctx context.Context) error {
			_, err := env.store.Resume(ctx, "a", Position{Epoch: last.Epoch, Seq: 1}, 10)
			return err
		},
		"ack": func(ctx context.Context) error {
			_, err := env.store.AckMany(ctx, []AckRequest{{Device: "a", Epoch: last.Epoch, Seq: 1}})
			return err
		},
		"claim": func(ctx context.Context) error {
			_, _, err := env.store.ClaimRoute(ctx, "a", "n1")
			return err
		},
		"open": func(ctx context.Context) error {
			_, _, _, err := env.store.Open(ctx, "a", "n1", Position{Epoch: last.Epoch, Seq: 1}, 10)
			return err
		},
		"release routes": func(ctx context.Context) error {
			_, err := env.store.ReleaseRoutes(ctx, []string{"a", "b"}, []Route{{Node: "n1", Epoch: 1}, {Node: "n1", Epoch: 2}})
			return err
		},
		"refresh routes": func(ctx context.Context) error {
			_, err := env.store.RefreshRoutes(ctx, []string{"a", "b"}, []Route{{Node: "n1", Epoch: 1}, {Node: "n1", Epoch: 2}})
			return err
		},
		"routes": func(ctx context.Context) error {
			_, err := env.store.Routes(ctx, []string{"a"})
			return err
		},
		"heartbeat": func(ctx context.Context) error {
			_, err := env.store.Heartbeat(ctx, NodeInfo{ID: "n1"})
			return err
		},
		"read deliveries": func(ctx context.Context) error {
			_, err := env.store.ReadDeliveries(ctx, "n1", 10, 50*time.Millisecond)
			return err
		},
	}
	checkAll := func(state string) {
		t.Helper()
		for name, op := range ops {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			start := time.Now()
			err := op(ctx)
			took := time.Since(start)
			cancel()
			t.Logf("%s with Redis %s: %v after %v", name, state, err, took.Round(time.Millisecond))
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s with Redis %s: %v, want ErrUnavailable", name, state, err)
			}
			// The deadline plus go-redis's retry backoff, well short of a hang.
			if took > 2*time.Second {
				t.Errorf("%s with Redis %s took %v", name, state, took)
			}
		}
	}

	env.srv.Stop()
	checkAll("stopped")

	// The append-only file (fsync always) brings everything back, and the
	// empty script cache is reloaded on the way (NOSCRIPT → EVAL).
	env.srv.Restart()
	ctx := testCtx(t)
	res, err := env.store.Append(ctx, msg("m-4"), []string{"a"})
	if err != nil || res[0].Seq != 4 || res[0].Epoch != last.Epoch {
		t.Fatalf("append after restart: %+v %v; want seq 4 in epoch %s", res, err, last.Epoch)
	}
	r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 1}, 0)
	if !r.Recovered || !equalSeqs(seqs(r.Entries), 2, 3, 4) {
		t.Fatalf("resume after restart: %+v", r)
	}

	env.srv.Pause()
	checkAll("paused")
	env.srv.Resume()
	poll.Until(t, 5*time.Second, func() error { return env.store.Ping(ctx) })
	// The append sent while Redis hung may have been applied once it woke
	// up: the caller cannot know, so it retries, and the retry must land
	// exactly once either way.
	res, err = env.store.Append(ctx, msg("x"), []string{"a"})
	if err != nil || res[0].Seq != 5 {
		t.Fatalf("retried append after resume: %+v %v; want seq 5", res, err)
	}
	res, err = env.store.Append(ctx, msg("x"), []string{"a"})
	if err != nil || res[0].Seq != 5 || !res[0].Duplicate {
		t.Fatalf("second retry: %+v %v; want duplicate seq 5", res, err)
	}
}

func TestStore_ReloadsFlushedScripts(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	appendN(t, env.store, "a", "m", 1)
	eachPrimary(t, env.rdb, func(ctx context.Context, c redis.Cmdable) error { return c.ScriptFlush(ctx).Err() })
	// A pipeline of several calls, all refused with NOSCRIPT, all resent once.
	res, err := env.store.Append(ctx, msg("m-2"), []string{"a", "b", "c"})
	if err != nil || res[0].Seq != 2 || res[1].Seq != 1 || res[2].Seq != 1 {
		t.Fatalf("append after SCRIPT FLUSH: %+v %v", res, err)
	}
	if n := env.rdb.XLen(ctx, inboxKey("a")).Val(); n != 2 {
		t.Fatalf("inbox holds %d, want 2: a resent call ran twice", n)
	}
}
