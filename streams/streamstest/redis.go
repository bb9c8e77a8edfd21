// Package streamstest runs real redis-server processes for tests: one
// server, a Redis Cluster, or a primary with replicas and Sentinels.
//
// StartRedis execs the redis-server binary on a free loopback port with its
// data directory in t.TempDir and kills it when the test ends. The server
// persists with an append-only file (fsync always by default), so Stop and
// Restart model a crash and a recovery, and Pause and Resume model a server
// that stops answering without closing its sockets:
//
//	srv := streamstest.StartRedis(t)
//	rdb := srv.Client(t)
//	store := streams.New(rdb, streams.Config{})
//
// StartCluster forms a cluster of three primaries (redis-cli --cluster
// create), StartSentinel a primary, a replica and three Sentinels. Start
// gives the topology PUSHD_TEST_REDIS names ("single" by default, or
// "cluster"), so one suite runs against either: see Start. Each
// deployment's Connect builds its client from its URL with redisurl, as
// pushd does.
//
// A missing redis-server (or redis-cli, for a cluster) fails the test: CI
// must install it, and a silently skipped Redis test proves nothing.
//
// The methods of Server, Cluster and Sentinel are safe for concurrent use,
// but tests normally drive Stop, Restart, Pause and Resume from one
// goroutine.
package streamstest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/freeport"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/streams/redisurl"
)

// startTimeout bounds how long StartRedis and Restart wait for the server to
// answer PING. Loading a large append-only file after Restart is the slow
// case; an empty server answers in a few milliseconds.
const startTimeout = 20 * time.Second

// Option changes how StartRedis runs the server.
type Option func(*options)

type options struct {
	binary      string
	appendFsync string
	args        []string

	// For StartCluster and StartSentinel.
	replicas  int           // replicas per primary; -1: the helper's default
	downAfter time.Duration // Sentinel's down-after-milliseconds

	// Set by the helpers for the servers they start.
	cluster   bool   // cluster-enabled, with a bus port of its own
	replicaOf string // start as a replica of this primary (host:port)
	sentinel  string // run as a Sentinel monitoring this primary (host:port)
}

// newOptions applies opts over the defaults.
func newOptions(t testing.TB, opts []Option) options {
	t.Helper()
	o := options{appendFsync: "always", replicas: -1}
	for _, opt := range opts {
		opt(&o)
	}
	if o.binary == "" {
		path, err := exec.LookPath("redis-server")
		if err != nil {
			t.Fatalf("streamstest: redis-server not found in PATH (install the redis-server package): %v", err)
		}
		o.binary = path
	}
	return o
}

// AppendFsync sets the appendfsync policy: "always" (the default, the
// appliance's strict mode), "everysec" (fast mode) or "no".
func AppendFsync(policy string) Option {
	return func(o *options) { o.appendFsync = policy }
}

// Args appends extra redis-server arguments, for example
// Args("--maxmemory", "10mb").
func Args(args ...string) Option {
	return func(o *options) { o.args = append(o.args, args...) }
}

// Replicas sets how many replicas each primary gets: StartCluster's
// default is 0, StartSentinel's 1. StartRedis ignores it.
func Replicas(n int) Option {
	return func(o *options) { o.replicas = n }
}

// Binary runs the redis-server at path instead of the one found in PATH.
func Binary(path string) Option {
	return func(o *options) { o.binary = path }
}

// Server is one redis-server process started by StartRedis (or one node
// or Sentinel of a Cluster or Sentinel set). Its ports and data directory
// stay the same across Stop and Restart.
type Server struct {
	tb      testing.TB
	opts    options
	dir     string
	port    int
	busPort int // the cluster bus; 0 unless a cluster node

	// life serializes Stop and Restart, so two of them cannot start two
	// processes. Lock order: life, then mu.
	life sync.Mutex

	mu   sync.Mutex
	cmd  *exec.Cmd     // nil while stopped
	done chan struct{} // closed when cmd has been waited for
}

// StartRedis starts a redis-server for the test and registers its kill in
// t.Cleanup. It fails the test if the binary is missing or the server does
// not answer PING in time.
func StartRedis(t testing.TB, opts ...Option) *Server {
	t.Helper()
	return startServer(t, newOptions(t, opts))
}

// StartReplica starts a redis-server replicating primary (replicaof in its
// configuration file) and waits until it has synced. Nothing fails over
// to it: StartSentinel is the helper for that.
func StartReplica(t testing.TB, primary *Server, opts ...Option) *Server {
	t.Helper()
	o := newOptions(t, opts)
	o.replicaOf = primary.Addr()
	s := startServer(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	// Synced when the primary streams to it: the primary lists it online.
	rdb := redis.NewClient(&redis.Options{Addr: primary.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
	defer rdb.Close()
	online := fmt.Sprintf(",port=%d,state=online,", s.port)
	for {
		info, err := rdb.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, online) {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("streamstest: replica %s of %s not in sync within %v: %v %s", s.Addr(), primary.Addr(), startTimeout, err, info)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// startServer starts one server as o says.
func startServer(t testing.TB, o options) *Server {
	t.Helper()
	s := &Server{tb: t, opts: o, dir: t.TempDir()}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(s.Stop)

	// Ports come from freeport's block, which no other test binary is
	// given; a process outside the tests may still hold one, and a few
	// attempts make that harmless.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		s.port, err = freePort()
		if err == nil && o.cluster {
			// Its own bus port (cluster-port), not Redis's default of
			// port+10000, which could lie in another binary's block or
			// in the kernel's ephemeral range.
			s.busPort, err = freePort()
		}
		if err != nil {
			t.Fatalf("streamstest: %v", err)
		}
		if err = s.start(); err == nil {
			return s
		}
		if !errors.Is(err, errAddrInUse) {
			break
		}
		// The configuration files name the taken port: write them anew.
		_ = os.Remove(filepath.Join(s.dir, "redis.conf"))
		_ = os.Remove(filepath.Join(s.dir, "sentinel.conf"))
	}
	t.Fatalf("streamstest: start redis-server: %v", err)
	return nil
}

// Addr returns the server's host:port.
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Dir returns the server's data directory (it holds the append-only file and
// redis.log).
func (s *Server) Dir() string { return s.dir }

// URL returns the server as pushd's --redis takes it.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Connect returns a client built from URL by redisurl, as pushd builds
// its own, closed in t.Cleanup.
func (s *Server) Connect(t testing.TB) redis.UniversalClient { return connect(t, s.URL()) }

// FlushAll empties the server (FLUSHALL), failing the test if it cannot.
func (s *Server) FlushAll(t testing.TB) {
	t.Helper()
	if err := s.Client(t).FlushAll(context.Background()).Err(); err != nil {
		t.Fatalf("streamstest: FLUSHALL %s: %v", s.Addr(), err)
	}
}

// Client returns a new go-redis client for the server with
// ContextTimeoutEnabled set, closed in t.Cleanup.
func (s *Server) Client(t testing.TB) *redis.Client {
	rdb := redis.NewClient(&redis.Options{
		Addr:                  s.Addr(),
		ContextTimeoutEnabled: true,
		// Fault tests stop the server; a short dial timeout keeps a refused
		// or unanswered dial from eating the test's whole context.
		DialTimeout: time.Second,
	})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Stop kills the server with SIGKILL, like a crash, and waits for it to exit.
// It is a no-op when the server is not running.
func (s *Server) Stop() {
	s.life.Lock()
	defer s.life.Unlock()
	s.kill()
}

// kill sends SIGKILL to the process this Server started, by its PID, and
// waits for it. SIGKILL also ends a process stopped by Pause.
func (s *Server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd, s.done = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart kills the server if it is running and starts it again on the same
// port with the same data directory, so everything the append-only file holds
// comes back. It waits until the server answers PING (that is, has loaded its
// data), and fails the test that started the server if it does not.
func (s *Server) Restart() {
	s.tb.Helper()
	s.life.Lock()
	defer s.life.Unlock()
	s.kill()
	if err := s.start(); err != nil {
		s.tb.Fatalf("streamstest: restart redis-server: %v", err)
	}
}

// running reports whether the process runs (or is paused).
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Pause stops the server with SIGSTOP: connections stay open and nothing
// answers, as with a hung host.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a server stopped by Pause.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.tb.Fatalf("streamstest: %v: redis-server is not running", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.tb.Fatalf("streamstest: %v: %v", sig, err)
	}
}

var errAddrInUse = errors.New("address already in use")

// args are the server's command line: a data server's settings, or a
// Sentinel's configuration file.
func (s *Server) args(logPath string) ([]string, error) {
	if s.opts.sentinel != "" {
		conf, err := s.sentinelConf(logPath)
		return []string{conf, "--sentinel"}, err
	}
	conf := []string{
		"port " + strconv.Itoa(s.port),
		"bind 127.0.0.1",
		fmt.Sprintf("dir %q", s.dir),
		fmt.Sprintf("logfile %q", logPath),
		"daemonize no",
		`save ""`,
		"appendonly yes",
		"appendfsync " + s.opts.appendFsync,
		// A replica syncs at once instead of waiting 5 s for others to
		// share the transfer.
		"repl-diskless-sync-delay 0",
	}
	if s.opts.cluster {
		conf = append(conf,
			"cluster-enabled yes",
			"cluster-config-file nodes.conf",
			fmt.Sprintf("cluster-node-timeout %d", clusterNodeTimeout.Milliseconds()),
			fmt.Sprintf("cluster-port %d", s.busPort))
	}
	if s.opts.replicaOf != "" {
		host, port, _ := net.SplitHostPort(s.opts.replicaOf)
		conf = append(conf, "replicaof "+host+" "+port)
	}
	path, err := s.writeConf("redis.conf", conf)
	if err != nil {
		return nil, err
	}
	// Args come after the file, so they override it.
	return append([]string{path}, s.opts.args...), nil
}

// writeConf writes a configuration file into the data directory once:
// on a restart the server reads it again, with what CONFIG REWRITE (a
// Sentinel reconfiguring a replica, a Sentinel recording its state) put
// there, as a server under systemd would.
func (s *Server) writeConf(name string, lines []string) (string, error) {
	path := filepath.Join(s.dir, name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

// start execs redis-server and waits until it answers PING.
func (s *Server) start() error {
	logPath := filepath.Join(s.dir, "redis.log")
	args, err := s.args(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.opts.binary, args...)
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", s.opts.binary, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	err = waitForPing(s.Addr(), done)
	if err == nil {
		return nil
	}
	s.kill()
	log := readTail(logPath)
	if strings.Contains(log, "Address already in use") {
		return errAddrInUse
	}
	return fmt.Errorf("%w; redis.log:\n%s", err, log)
}

// waitForPing polls the server until it answers +PONG (a server still loading
// its append-only file answers -LOADING), it exits, or startTimeout passes.
func waitForPing(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("redis-server exited during start")
		default:
		}
		if last = ping(addr); last == nil {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("redis-server did not answer PING within %v: %w", startTimeout, last)
}

func ping(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// connect builds a client from a deployment's URL, as pushd does.
func connect(t testing.TB, url string) redis.UniversalClient {
	t.Helper()
	o, err := redisurl.Parse(url)
	if err != nil {
		t.Fatalf("streamstest: %v", err)
	}
	u := o.Universal()
	// Fault tests stop servers; a short dial timeout keeps a refused or
	// unanswered dial from eating the test's whole context.
	u.DialTimeout = time.Second
	rdb := redis.NewUniversalClient(u)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func freePort() (int, error) {
	ports, err := freeport.Take(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// readTail returns the last few KiB of the server log for a failure message.
func readTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const max = 4 << 10
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(bytes.TrimSpace(b))
}
