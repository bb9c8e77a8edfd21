package streams

import (
	"errors"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
)

func TestStore_MarkOnceIsFirstOnlyOnceUntilItExpires(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	for i, want := range []bool{true, false, false} {
		first, err := env.store.MarkOnce(ctx, "bridge:m1", 200*time.Millisecond)
		if err != nil || first != want {
			t.Fatalf("call %d: first %v, %v; want %v", i, first, err, want)
		}
	}
	if first, err := env.store.MarkOnce(ctx, "bridge:m2", time.Minute); err != nil || !first {
		t.Fatalf("another name: first %v, %v", first, err)
	}
	if ttl := env.rdb.PTTL(ctx, onceKey("bridge:m2")).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("mark's TTL %s, want (0, 1m]", ttl)
	}
	// Expiry forgets the name: a mark is bounded by its TTL.
	mustDo(t, env.rdb.PExpire(ctx, onceKey("bridge:m1"), time.Millisecond))
	poll.Until(t, 5*time.Second, func() error {
		if env.rdb.Exists(ctx, onceKey("bridge:m1")).Val() == 1 {
			return errors.New("mark still there")
		}
		return nil
	})
	if first, err := env.store.MarkOnce(ctx, "bridge:m1", time.Minute); err != nil || !first {
		t.Fatalf("after expiry: first %v, %v", first, err)
	}
}

func TestStore_MarkOnceRefusesBadArguments(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	for _, c := range []struct {
		name string
		ttl  time.Duration
	}{{"", time.Second}, {"a{b", time.Second}, {"x", 0}, {"x", -time.Second}} {
		if _, err := env.store.MarkOnce(ctx, c.name, c.ttl); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("MarkOnce(%q, %s): %v, want ErrInvalidArgument", c.name, c.ttl, err)
		}
	}
	if n := env.rdb.DBSize(ctx).Val(); n != 0 {
		t.Fatalf("refused calls left %d keys", n)
	}
}
