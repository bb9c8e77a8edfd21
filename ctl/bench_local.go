package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

const (
	// localStartTimeout bounds the wait for a local pushd's config file.
	localStartTimeout = 30 * time.Second
	// localStopTimeout bounds its drain after SIGTERM before SIGKILL.
	localStopTimeout = 20 * time.Second
	// localConfigName is the file `pushd --dev` writes, atomically, once
	// it accepts connections.
	localConfigName = "pushctl.json"
)

// localServer is a throwaway `pushd --dev` started by bench --local.
type localServer struct {
	cmd    *exec.Cmd
	dir    string
	log    *os.File
	exited chan struct{} // closed when the process has been waited for
	err    error         // its exit status, once exited is closed
	cfg    fileConfig
	stderr io.Writer
}

// findPushd locates the pushd binary: the --pushd flag, else next to the
// running pushctl, else on PATH.
func findPushd(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "pushd")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath("pushd")
	if err != nil {
		return "", usagef("--local: no pushd binary next to pushctl or on PATH; build one (go build -o bin/pushd ./appliance/cmd/pushd) or pass --pushd")
	}
	return p, nil
}

// startLocal starts pushd in dev mode on loopback ports in a fresh
// directory and waits for it to write its config file.
func startLocal(ctx context.Context, e *env, pushdFlag string, extra []string) (*localServer, error) {
	bin, err := findPushd(pushdFlag)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pushctl-bench-")
	if err != nil {
		return nil, fmt.Errorf("--local: %w", err)
	}
	logf, err := os.Create(filepath.Join(dir, "pushd.log"))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("--local: %w", err)
	}
	args := append([]string{"--dev", "--data-dir", dir,
		"--ws-addr", "127.0.0.1:0", "--tcp-addr", "127.0.0.1:0",
		"--push-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0",
		"--connect-rate", "-1"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = serverProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("--local: start %s: %w", bin, err)
	}
	s := &localServer{cmd: cmd, dir: dir, log: logf, exited: make(chan struct{}), stderr: e.stderr}
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()
	fmt.Fprintf(e.stderr, "pushctl bench: started %s (pid %d) in %s\n", bin, cmd.Process.Pid, dir)
	if err := s.waitConfig(ctx); err != nil {
		tail := s.logTail()
		s.stop()
		return nil, fmt.Errorf("--local: %w%s", err, tail)
	}
	return s, nil
}

func (s *localServer) waitConfig(ctx context.Context) error {
	path := filepath.Join(s.dir, localConfigName)
	deadline := time.NewTimer(localStartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			if err := json.Unmarshal(b, &s.cfg); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if s.cfg.WSURL == "" || s.cfg.PushURL == "" {
				return fmt.Errorf("%s names no ws_url or push_url", path)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.exited:
			return fmt.Errorf("pushd exited before it was ready: %v", s.err)
		case <-deadline.C:
			return fmt.Errorf("pushd wrote no %s within %s", path, localStartTimeout)
		case <-tick.C:
		}
	}
}

// pid is the started process's id, for reading its RSS.
func (s *localServer) pid() int { return s.cmd.Process.Pid }

// stop sends SIGTERM to the pushd it started (that pid only), waits for it
// to drain and exit (SIGKILL after localStopTimeout), and removes its
// directory.
func (s *localServer) stop() {
	select {
	case <-s.exited:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(localStopTimeout):
			fmt.Fprintf(s.stderr, "pushctl bench: pushd (pid %d) still running %s after SIGTERM; killing it\n", s.pid(), localStopTimeout)
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	_ = s.log.Close()
	if err := os.RemoveAll(s.dir); err != nil {
		fmt.Fprintf(s.stderr, "pushctl bench: remove %s: %v\n", s.dir, err)
	}
}

// logTail returns the end of pushd's output, to explain a failed start.
func (s *localServer) logTail() string {
	b, err := os.ReadFile(s.log.Name())
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return "\npushd output:\n" + string(bytes.TrimRight(b, "\n"))
}
