// Package streamstest runs a real redis-server for tests.
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
// A missing redis-server binary fails the test: CI must install it, and a
// silently skipped Redis test proves nothing.
//
// A Server's methods are safe for concurrent use, but tests normally drive
// Stop, Restart, Pause and Resume from one goroutine.
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

// Binary runs the redis-server at path instead of the one found in PATH.
func Binary(path string) Option {
	return func(o *options) { o.binary = path }
}

// Server is one redis-server process started by StartRedis. Its port and
// data directory stay the same across Stop and Restart.
type Server struct {
	tb   testing.TB
	opts options
	dir  string
	port int

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
	o := options{appendFsync: "always"}
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
	s := &Server{tb: t, opts: o, dir: t.TempDir()}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(s.Stop)

	// A free port can be taken by someone else between our probe and the
	// server's bind; a few attempts make that race harmless.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		s.port, err = freePort()
		if err != nil {
			t.Fatalf("streamstest: %v", err)
		}
		if err = s.start(); err == nil {
			return s
		}
		if !errors.Is(err, errAddrInUse) {
			break
		}
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

// start execs redis-server and waits until it answers PING.
func (s *Server) start() error {
	logPath := filepath.Join(s.dir, "redis.log")
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--logfile", logPath,
		"--daemonize", "no",
		"--save", "",
		"--appendonly", "yes",
		"--appendfsync", s.opts.appendFsync,
	}
	args = append(args, s.opts.args...)
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

	err := waitForPing(s.Addr(), done)
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
