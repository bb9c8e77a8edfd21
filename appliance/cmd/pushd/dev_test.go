package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/internal/poll"
)

// The dev redis-server's supervisor, against real redis-server processes
// killed by pid.

func TestDevRedis_RestartsAfterKill(t *testing.T) {
	d, logs := runDevRedis(t, func(d *devRegion) { d.restartMin = 50 * time.Millisecond })
	rdb := devClient(t, d)
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := rdb.ConfigGet(ctx, "appendfsync").Result(); err != nil || got["appendfsync"] != "always" {
		t.Fatalf("CONFIG GET appendfsync: %v, %v", got, err)
	}

	// Twice: the supervisor keeps supervising after a restart.
	var pids []int
	for range 2 {
		old := d.redisPID()
		pids = append(pids, old)
		killPID(t, old)
		poll.Until(t, 10*time.Second, func() error {
			if pid := d.redisPID(); pid == 0 || pid == old {
				return fmt.Errorf("redis-server not restarted yet (pid %d, killed %d)", pid, old)
			}
			return rdb.Ping(ctx).Err()
		})
		// appendfsync always: the write acked before the SIGKILL is there.
		if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
			t.Fatalf("after restart GET k = %q, %v", got, err)
		}
	}
	if n := len(logs.find("redis-server exited; restarting it")); n != 2 {
		t.Fatalf("%d exits logged, want 2:\n%s", n, logs)
	}

	last := d.redisPID()
	stopWithin(t, d, 15*time.Second)
	assertNoRedisLeft(t, d, append(pids, last)...)
}

func TestDevRedis_KeepsTryingWithCappedBackoff(t *testing.T) {
	d, logs := runDevRedis(t, func(d *devRegion) {
		d.restartMin = 20 * time.Millisecond
		d.restartMax = 160 * time.Millisecond
	})
	rdb := devClient(t, d)
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	// Take redis-server's --dir away under it, then kill it: every restart
	// fails (redis-server cannot chdir there) until the dir is back.
	dataDir := filepath.Join(d.dir, "redis")
	if err := os.Rename(dataDir, dataDir+".away"); err != nil {
		t.Fatal(err)
	}
	first := d.redisPID()
	killPID(t, first)
	const failures = 6
	poll.Until(t, 20*time.Second, func() error {
		if n := len(logs.find("redis-server exited; restarting it")); n < 1+failures {
			return fmt.Errorf("%d exits logged, want %d", n, 1+failures)
		}
		return nil
	})
	if err := os.Rename(dataDir+".away", dataDir); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() error { return rdb.Ping(ctx).Err() })
	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("after the restarts GET k = %q, %v", got, err)
	}

	// The waits double from restartMin and stay at restartMax.
	var delays []time.Duration
	for _, r := range logs.find("redis-server exited; restarting it") {
		delays = append(delays, r.attrs["restart_in"].(time.Duration))
	}
	ms := time.Millisecond
	want := []time.Duration{20 * ms, 40 * ms, 80 * ms, 160 * ms, 160 * ms, 160 * ms, 160 * ms}
	if len(delays) < len(want) || fmt.Sprint(delays[:len(want)]) != fmt.Sprint(want) {
		t.Fatalf("restart waits %v, want %v first", delays, want)
	}
	stopWithin(t, d, 15*time.Second)
	assertNoRedisLeft(t, d, first)
}

func TestDevRedis_StopDuringRestartWait(t *testing.T) {
	d, logs := runDevRedis(t, func(d *devRegion) { d.restartMin = time.Hour })
	pid := d.redisPID()
	killPID(t, pid)
	poll.Until(t, 10*time.Second, func() error {
		if len(logs.find("redis-server exited; restarting it")) == 0 {
			return errors.New("the supervisor has not seen the exit")
		}
		return nil
	})
	begin := time.Now()
	stopWithin(t, d, 10*time.Second)
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("stop took %s to interrupt the restart wait", took)
	}
	assertNoRedisLeft(t, d, pid)
	if n := len(logs.find("redis-server started")); n != 1 {
		t.Fatalf("redis-server started %d times, want once:\n%s", n, logs)
	}
}

func TestDevRedis_StopKillsARedisThatIgnoresSIGTERM(t *testing.T) {
	d, logs := runDevRedis(t, func(d *devRegion) { d.stopGrace = 300 * time.Millisecond })
	pid := d.redisPID()
	// A stopped process keeps SIGTERM pending; only SIGKILL ends it.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	stopWithin(t, d, 10*time.Second)
	if took := time.Since(begin); took < d.stopGrace {
		t.Fatalf("stop returned after %s, before the %s grace", took, d.stopGrace)
	}
	assertNoRedisLeft(t, d, pid)
	if len(logs.find("redis-server did not stop after SIGTERM; killing it")) != 1 {
		t.Fatalf("no kill logged:\n%s", logs)
	}
}

func TestDevRedis_StopIsIdempotent(t *testing.T) {
	d, _ := runDevRedis(t, nil)
	pid := d.redisPID()
	stopWithin(t, d, 15*time.Second)
	stopWithin(t, d, time.Second)
	assertNoRedisLeft(t, d, pid)
}

// runDevRedis runs a dev region's redis-server in a temporary dir, with
// tune applied to the supervisor's timing first, and stops it at cleanup.
func runDevRedis(t *testing.T, tune func(*devRegion)) (*devRegion, *logRecorder) {
	t.Helper()
	logs := &logRecorder{}
	d, err := newDevRegion(t.TempDir(), slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	if tune != nil {
		tune(d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := d.run(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopWithin(t, d, 15*time.Second) })
	if d.redisPID() == 0 {
		t.Fatal("no redis-server pid after run")
	}
	return d, logs
}

// stopWithin stops d, or, if stop hangs, kills its redis-server and fails
// the test, so a broken supervisor cannot hang the test binary.
func stopWithin(t *testing.T, d *devRegion, timeout time.Duration) {
	t.Helper()
	stopped := make(chan struct{})
	go func() { d.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(timeout):
		if pid := d.redisPID(); pid != 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		t.Fatalf("stop did not return within %s", timeout)
	}
}

func devClient(t *testing.T, d *devRegion) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(d.redisURL())
	if err != nil {
		t.Fatal(err)
	}
	opts.MaxRetries = -1
	opts.DialTimeout, opts.ReadTimeout = time.Second, time.Second
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func killPID(t *testing.T, pid int) {
	t.Helper()
	if pid == 0 {
		t.Fatal("no redis-server to kill")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
}

// assertNoRedisLeft checks, after stop, that the supervisor is done, that
// every pid given is gone, that this process has no redis-server child and
// that nothing listens on the dev port.
func assertNoRedisLeft(t *testing.T, d *devRegion, pids ...int) {
	t.Helper()
	select {
	case <-d.done:
	default:
		t.Fatal("the supervisor is still running after stop")
	}
	if pid := d.redisPID(); pid != 0 {
		t.Fatalf("redisPID %d after stop", pid)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("redis-server pid %d still exists after stop (kill -0: %v)", pid, err)
		}
	}
	if kids := childRedisServers(t); len(kids) != 0 {
		t.Fatalf("redis-server children left after stop: %v", kids)
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", d.port), time.Second); err == nil {
		c.Close()
		t.Fatalf("something still listens on the dev redis port %d", d.port)
	}
}

// childRedisServers lists the pids of this process's redis-server
// children, from /proc.
func childRedisServers(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("list processes: %v", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(b)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		fields := strings.Fields(s[closing+1:])
		if len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == os.Getpid() && s[open+1:closing] == "redis-server" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu    sync.Mutex
	recs  []logRecord
	attrs []slog.Attr // from WithAttrs; only on derived handlers
	root  *logRecorder
}

type logRecord struct {
	msg   string
	attrs map[string]any
}

func (h *logRecorder) store() *logRecorder {
	if h.root != nil {
		return h.root
	}
	return h
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{msg: r.Message, attrs: map[string]any{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.Any()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.Any()
		return true
	})
	s := h.store()
	s.mu.Lock()
	s.recs = append(s.recs, rec)
	s.mu.Unlock()
	return nil
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{root: h.store(), attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

// find returns the records with message msg, in order.
func (h *logRecorder) find(msg string) []logRecord {
	s := h.store()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []logRecord
	for _, r := range s.recs {
		if r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}

func (h *logRecorder) String() string {
	s := h.store()
	s.mu.Lock()
	defer s.mu.Unlock()
	var sb strings.Builder
	for _, r := range s.recs {
		fmt.Fprintf(&sb, "%s %v\n", r.msg, r.attrs)
	}
	return sb.String()
}
