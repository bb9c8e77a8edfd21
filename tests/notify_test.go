package tests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
)

// notifySocket is a systemd notify socket: it records every datagram a
// process sends it, with when it came.
type notifySocket struct {
	path string
	msgs chan notifyMsg
}

type notifyMsg struct {
	at    time.Time
	state string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	s := &notifySocket{path: path, msgs: make(chan notifyMsg, 64)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(s.msgs)
				return
			}
			s.msgs <- notifyMsg{at: time.Now(), state: string(buf[:n])}
		}
	}()
	return s
}

// next returns the next datagram, or fails after timeout.
func (s *notifySocket) next(t *testing.T, timeout time.Duration) notifyMsg {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case <-time.After(timeout):
		t.Fatalf("nothing on the notify socket within %s", timeout)
	}
	return notifyMsg{}
}

// none fails if a datagram comes within d.
func (s *notifySocket) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-s.msgs:
		t.Fatalf("unexpected notification %q", m.state)
	case <-time.After(d):
	}
}

// TestNotify_ReadyOnlyOnceUpAndStoppingOnSIGTERM: pushd tells systemd
// READY only once its listeners are bound, Redis holds its delivery
// stream and heartbeat, and Raft has a leader that registered it; a
// node that cannot have all of that never says READY. SIGTERM makes it
// say STOPPING, drain, and exit 0.
func TestNotify_ReadyOnlyOnceUpAndStoppingOnSIGTERM(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs a region of pushd processes")
	}
	// Redis unreachable: the node fails its start, without READY.
	closed := freePorts(t, 1)[0]
	lone := newNode(t, "lone")
	sock := newNotifySocket(t)
	lone.env = []string{"NOTIFY_SOCKET=" + sock.path}
	lone.start(t, fmt.Sprintf("redis://127.0.0.1:%d/0", closed), "--bootstrap")
	exited := make(chan error, 1)
	go func() { exited <- lone.cmd.Wait() }()
	select {
	case err := <-exited:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("pushd without Redis: %v, want exit status 1\n%s", err, lone.logs)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("pushd without Redis still runs after 60 s\n%s", lone.logs)
	}
	sock.none(t, 100*time.Millisecond)
	if !strings.Contains(lone.logs.String(), "cannot reach Redis") {
		t.Fatalf("log does not say why:\n%s", lone.logs)
	}

	// Raft without a majority: node 3 of a region restarted alone has its
	// listeners and Redis, but no leader to register with.
	nodes, tok, redisURL := startRegion(t)
	for _, n := range nodes {
		n.stop(syscall.SIGTERM)
	}
	n3 := nodes[2]
	sock = newNotifySocket(t)
	n3.env = []string{"NOTIFY_SOCKET=" + sock.path}
	n3.start(t, redisURL)
	hc := &http.Client{Timeout: time.Second}
	poll.Until(t, 30*time.Second, func() error {
		resp, err := hc.Get("http://" + n3.addr("ws") + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("healthz %d, want 503 starting", resp.StatusCode)
		}
		return nil
	})
	sock.none(t, 2*time.Second)

	// A majority again: now READY, and everything holds when it comes.
	nodes[0].start(t, redisURL)
	m := sock.next(t, 60*time.Second)
	if m.state != "READY=1\nSTATUS=serving" {
		t.Fatalf("first notification %q", m.state)
	}
	resp, err := hc.Get("http://" + n3.addr("ws") + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz right after READY: %v %v", resp, err)
	}
	resp.Body.Close()
	st, err := status(t, n3, tok)
	if err != nil || st.Leader == "" {
		t.Fatalf("status right after READY: %+v %v", st, err)
	}
	alive := false
	for _, s := range st.Nodes {
		alive = alive || (s.ID == n3.id && s.Alive)
	}
	if !alive {
		t.Fatalf("%s not an alive member right after READY: %+v", n3.id, st)
	}
	resp, err = hc.Get("http://" + n3.addr("ws") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"\npushd_log_dropped_total 0\n", "\npushd_trace_bytes ", "\npushd_trace_retained_seconds "} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	rdb := redisClient(t, redisURL)
	ctx := context.Background()
	if n, err := rdb.Exists(ctx, "pushd:node:{"+n3.id+"}:heartbeat").Result(); err != nil || n != 1 {
		t.Fatalf("heartbeat of %s right after READY: %d %v", n3.id, n, err)
	}
	if groups, err := rdb.XInfoGroups(ctx, "pushd:node:{"+n3.id+"}:deliveries").Result(); err != nil || len(groups) != 1 {
		t.Fatalf("delivery stream of %s right after READY: %v %v", n3.id, groups, err)
	}

	// SIGTERM: STOPPING first, then a clean exit.
	if err := n3.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	m = sock.next(t, 10*time.Second)
	if !strings.HasPrefix(m.state, "STOPPING=1\nSTATUS=draining") {
		t.Fatalf("notification after SIGTERM %q", m.state)
	}
	exited = make(chan error, 1)
	go func() { exited <- n3.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, n3.logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30 s after SIGTERM")
	}
	n3.down.Store(true)
	if !strings.Contains(n3.logs.String(), `msg="delivery stream handed over`) {
		t.Errorf("log of the stopped node lacks the hand-over:\n%s", n3.logs)
	}
	if n, err := rdb.Exists(ctx, "pushd:node:{"+n3.id+"}:heartbeat").Result(); err != nil || n != 0 {
		t.Errorf("heartbeat of %s still there after its shutdown: %d %v", n3.id, n, err)
	}
}
