package streams

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/streams/streamstest"
)

// testEnv is a real Redis, a client and a Store on it. The Redis is one
// redis-server, or a cluster of three primaries when PUSHD_TEST_REDIS is
// "cluster" (streamstest.Start): every test that uses newEnv runs against
// both. Setup commands that must reach every primary go through
// eachPrimary or nodeFor.
type testEnv struct {
	srv   streamstest.Redis
	rdb   redis.UniversalClient
	store *Store
}

func newEnv(t *testing.T, cfg Config, opts ...streamstest.Option) *testEnv {
	t.Helper()
	return envOn(t, streamstest.Start(t, opts...), cfg)
}

// envOn is a testEnv on srv: a Store with cfg on a client of srv's.
func envOn(t *testing.T, srv streamstest.Redis, cfg Config) *testEnv {
	rdb := srv.Connect(t)
	return &testEnv{srv: srv, rdb: rdb, store: New(rdb, cfg)}
}

// eachPrimary runs f on every primary: the server, or each primary of a
// cluster (FLUSHALL, SCRIPT FLUSH, DBSIZE go to one node of a cluster
// otherwise).
func eachPrimary(t *testing.T, rdb redis.UniversalClient, f func(ctx context.Context, c redis.Cmdable) error) {
	t.Helper()
	ctx := testCtx(t)
	var err error
	if c, ok := rdb.(*redis.ClusterClient); ok {
		err = c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return f(ctx, m) })
	} else {
		err = f(ctx, rdb)
	}
	if err != nil {
		t.Fatalf("on every primary: %v", err)
	}
}

// flushAll empties every primary.
func flushAll(t *testing.T, rdb redis.UniversalClient) {
	t.Helper()
	eachPrimary(t, rdb, func(ctx context.Context, c redis.Cmdable) error { return c.FlushAll(ctx).Err() })
}

// dbSize counts the keys on every primary.
func dbSize(t *testing.T, rdb redis.UniversalClient) int64 {
	t.Helper()
	var mu sync.Mutex
	var n int64
	eachPrimary(t, rdb, func(ctx context.Context, c redis.Cmdable) error {
		k, err := c.DBSize(ctx).Result()
		mu.Lock()
		n += k
		mu.Unlock()
		return err
	})
	return n
}

// loadScripts caches every script on every primary, so that a test
// counting round trips sees no NOSCRIPT retry (a cluster caches scripts
// per node).
func loadScripts(t *testing.T, rdb redis.UniversalClient) {
	t.Helper()
	eachPrimary(t, rdb, func(ctx context.Context, c redis.Cmdable) error {
		for _, sc := range []*redis.Script{appendScript, resumeScript, readScript, ackScript, claimScript,
			releaseScript, refreshScript, takeoverScript, retireScript, heartbeatScript,
			userScript, membersScript, memberScript, gstreamScript, gappendScript, greadScript} {
			if err := sc.Load(ctx, c).Err(); err != nil {
				return err
			}
		}
		return nil
	})
}

// nodeFor returns a client of the server holding key: rdb itself, or the
// cluster primary serving key's slot (for INFO, CLIENT LIST).
func nodeFor(t *testing.T, rdb redis.UniversalClient, key string) redis.Cmdable {
	t.Helper()
	c, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return rdb
	}
	m, err := c.MasterForKey(testCtx(t), key)
	if err != nil {
		t.Fatalf("primary of %s: %v", key, err)
	}
	return m
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
func countRoundTrips(rdb redis.UniversalClient) *atomic.Int64 {
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
