// Package tests holds black-box tests: they build the pushd and pushctl
// binaries and drive them as a user would, through their command lines,
// listeners and files only.
package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bin holds the binaries built once for the package's tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pushd-tests-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for name, pkg := range map[string]string{"pushd": "../appliance/cmd/pushd", "pushctl": "../ctl/cmd/pushctl"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, out)
			os.Exit(1)
		}
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// devRegion is a `pushd --dev` process in its own directory.
type devRegion struct {
	dir  string
	cmd  *exec.Cmd
	logs *logBuffer
	info map[string]any
}

// logBuffer collects a process's stderr; exec copies into it from its
// own goroutine while the test reads it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Reset()
}

// startDev runs pushd --dev in a fresh directory on free loopback ports and
// waits until it has written pushd-dev/pushctl.json.
func startDev(t *testing.T) *devRegion {
	t.Helper()
	r := &devRegion{dir: t.TempDir(), logs: &logBuffer{}}
	r.cmd = exec.Command(filepath.Join(bin, "pushd"), "--dev",
		"--ws-addr", "127.0.0.1:0", "--tcp-addr", "127.0.0.1:0", "--push-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0")
	r.cmd.Dir = r.dir
	r.cmd.Stdout, r.cmd.Stderr = io.Discard, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			_ = r.cmd.Process.Kill()
			_ = r.cmd.Wait()
		}
	})
	path := filepath.Join(r.dir, "pushd-dev", "pushctl.json")
	waitFor(t, 30*time.Second, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &r.info)
	})
	return r
}

// pushctl runs one pushctl command in the region's directory (so it finds
// pushd-dev/pushctl.json by itself, as in the README) and returns stdout.
func (r *devRegion) pushctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pushctl"), args...)
	cmd.Dir = r.dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("pushctl %s: %w: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), err
}

// listener is a running `pushctl listen -o json`.
type listener struct {
	cmd   *exec.Cmd
	lines chan map[string]any
}

func (r *devRegion) listen(t *testing.T, device string) *listener {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "pushctl"), "listen", "--device", device, "-o", "json")
	cmd.Dir = r.dir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &listener{cmd: cmd, lines: make(chan map[string]any, 64)}
	go func() {
		defer close(l.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				l.lines <- m
			}
		}
	}()
	t.Cleanup(l.stop)
	return l
}

// next returns the next printed frame of type typ.
func (l *listener) next(t *testing.T, typ string) map[string]any {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m, ok := <-l.lines:
			if !ok {
				t.Fatalf("listen exited before printing a %s", typ)
			}
			if m["type"] == typ {
				return m
			}
		case <-deadline:
			t.Fatalf("listen printed no %s", typ)
		}
	}
}

func (l *listener) stop() {
	if l.cmd.ProcessState != nil {
		return
	}
	_ = l.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = l.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = l.cmd.Process.Kill()
		<-done
	}
}

// TestWalkthrough_DevRegion is the README's five minutes: a dev region, a
// device listening, pushes delivered live and replayed after a reconnect,
// the device's state, and a clean stop that takes the dev redis-server
// down with it.
func TestWalkthrough_DevRegion(t *testing.T) {
	r := startDev(t)

	l := r.listen(t, "phone-1")
	if w := l.next(t, "WELCOME"); w["recovered"] != true {
		t.Fatalf("first WELCOME %v", w)
	}
	out, err := r.pushctl(t, "push", "--device", "phone-1", "--data", "hello", "--wait-ack", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var pushed struct {
		ID      string
		Stored  bool
		Results []struct {
			Device, Status string
			Seq            uint64
			Acked          *bool   `json:"acked"`
			AckLatencyMS   float64 `json:"ack_latency_ms"`
		}
	}
	if err := json.Unmarshal([]byte(out), &pushed); err != nil {
		t.Fatalf("push output %q: %v", out, err)
	}
	if !pushed.Stored || len(pushed.Results) != 1 || pushed.Results[0].Status != "delivered" ||
		pushed.Results[0].Acked == nil || !*pushed.Results[0].Acked {
		t.Fatalf("push answer %s", out)
	}
	t.Logf("push → ack latency through the binaries: %.1f ms", pushed.Results[0].AckLatencyMS)
	if p := l.next(t, "PUSH"); p["payload"] != "hello" || p["id"] != pushed.ID {
		t.Fatalf("listen printed %v", p)
	}

	// Offline: the push is stored, and replayed when the device is back.
	l.stop()
	waitFor(t, 10*time.Second, func() error {
		out, err := r.pushctl(t, "device", "show", "phone-1", "-o", "json")
		if err != nil {
			return err
		}
		if strings.Contains(out, `"online": true`) || strings.Contains(out, `"online":true`) {
			return fmt.Errorf("device still online: %s", out)
		}
		return nil
	})
	out, err = r.pushctl(t, "push", "--device", "phone-1", "--data", "while you were away", "-o", "json")
	if err != nil || !strings.Contains(out, `"stored"`) {
		t.Fatalf("offline push: %q, %v", out, err)
	}
	l2 := r.listen(t, "phone-1")
	l2.next(t, "WELCOME")
	if p := l2.next(t, "PUSH"); p["payload"] != "while you were away" {
		t.Fatalf("replayed %v", p)
	}
	waitFor(t, 10*time.Second, func() error {
		out, err := r.pushctl(t, "device", "show", "phone-1", "-o", "json")
		if err != nil {
			return err
		}
		var st struct {
			Acked    uint64 `json:"acked"`
			InboxLen int64  `json:"inbox_len"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return fmt.Errorf("device show %q: %w", out, err)
		}
		if st.Acked != 2 || st.InboxLen != 0 {
			return fmt.Errorf("device state %s", out)
		}
		return nil
	})
	l2.stop()

	redisPid := devRedisPid(t, r)
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("pushd exited with %v; log:\n%s", err, r.logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("pushd did not stop within 20 s of SIGTERM")
	}
	if redisPid != 0 && syscall.Kill(redisPid, 0) == nil {
		t.Fatalf("the dev redis-server (pid %d) outlived pushd", redisPid)
	}
}

// devRedisPid reads the dev redis-server's pid from pushd's log.
func devRedisPid(t *testing.T, r *devRegion) int {
	t.Helper()
	for _, line := range strings.Split(r.logs.String(), "\n") {
		if !strings.Contains(line, "redis-server started") {
			continue
		}
		var pid int
		if j := strings.Index(line, "pid="); j >= 0 {
			fmt.Sscanf(line[j+4:], "%d", &pid)
			return pid
		}
	}
	return 0
}

func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
