package streams

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/streams/streamstest"
)

// testEnv is one real redis-server, a client and a Store on it.
type testEnv struct {
	srv   *streamstest.Server
	rdb   *redis.Client
	store *Store
}

func newEnv(t *testing.T, cfg Config, opts ...streamstest.Option) *testEnv {
	t.Helper()
	srv := streamstest.StartRedis(t, opts...)
	rdb := srv.Client(t)
	return &testEnv{srv: srv, rdb: rdb, store: New(rdb, cfg)}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mustDo fails the test if a direct Redis command that sets up a scenario
// failed, so a broken setup cannot pass for the behaviour under test.
func mustDo(t *testing.T, cmd interface{ Err() error }) {
	t.Helper()
	if err := cmd.Err(); err != nil {
		t.Fatalf("setup command: %v", err)
	}
}

func msg(id string) Message {
	return Message{ID: id, Business: "chat", Priority: PriorityNormal, Payload: []byte("payload " + id)}
}

// appendN appends n messages with ids prefix-1..prefix-n to device and
// returns the last result.
func appendN(t *testing.T, s *Store, device, prefix string, n int) Appended {
	t.Helper()
	var last Appended
	for i := 1; i <= n; i++ {
		res, err := s.Append(testCtx(t), msg(fmt.Sprintf("%s-%d", prefix, i)), []string{device})
		if err != nil {
			t.Fatalf("append %s-%d: %v", prefix, i, err)
		}
		last = res[0]
	}
	return last
}

func seqs(entries []Entry) []uint64 {
	out := make([]uint64, len(entries))
	for i, e := range entries {
		out[i] = e.Seq
	}
	return out
}

func equalSeqs(a []uint64, b ...uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func mustResume(t *testing.T, s *Store, device string, pos Position, limit int) Resumed {
	t.Helper()
	r, err := s.Resume(testCtx(t), device, pos, limit)
	if err != nil {
		t.Fatalf("resume %s from %+v: %v", device, pos, err)
	}
	return r
}

// errOf drops a call's result and keeps its error.
func errOf[T any](_ T, err error) error { return err }

// countRoundTrips counts the commands and pipelines rdb sends from now on,
// each one round trip. Warm the client up first (a connection made later
// may send its handshake through the hooks too), and expect one more trip
// when a script is not cached yet (NOSCRIPT, then EVAL).
func countRoundTrips(rdb *redis.Client) *atomic.Int64 {
	h := &tripHook{}
	rdb.AddHook(h)
	return &h.n
}

type tripHook struct{ n atomic.Int64 }

func (h *tripHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *tripHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *tripHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

func mustAck(t *testing.T, s *Store, device, epoch string, seq uint64) {
	t.Helper()
	ok, err := s.AckMany(testCtx(t), []AckRequest{{Device: device, Epoch: epoch, Seq: seq}})
	if err != nil || !ok[0] {
		t.Fatalf("ack %s up to %d: %v %v", device, seq, ok, err)
	}
}

// redisZ is a sorted set member scored by a time in unix ms, as the user
// index scores its devices.
func redisZ(at time.Time, member string) redis.Z {
	return redis.Z{Score: float64(at.UnixMilli()), Member: member}
}
