package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// ErrNoPushd is returned by StartLocal when it is given no pushd binary
// and finds none.
var ErrNoPushd = errors.New("no pushd binary next to this executable or on PATH")

// Local is a throwaway region: one `pushd --dev` in a fresh directory,
// every listener on a loopback port the kernel picks, so a dev region
// already running on the default ports is no obstacle. Its Stop may be
// called from any goroutine, once.
type Local struct {
	// Bin is the pushd binary run, Dir its data directory (removed by
	// Stop).
	Bin, Dir string
	// ConfigFile is the pushctl.json the server wrote once it accepted
	// connections: its URLs and the dev app's credentials.
	ConfigFile string
	// WSURL, TCPURL and PushURL are the device and push API endpoints
	// the server announced in ConfigFile.
	WSURL, TCPURL, PushURL string
	// Region is the server's region; KafkaAddr its embedded Kafka's
	// address ("" unless started with --dev-kafka).
	Region, KafkaAddr string

	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{} // closed when the process has been waited for
	err    error         // its exit status, once exited is closed
}

// StartLocal starts `pushd --dev` on loopback ports with args added to
// its command line, and waits until it accepts connections. bin is the
// pushd binary; "" means the one next to the running executable, else the
// one on PATH (ErrNoPushd when there is none). The caller must Stop it.
func StartLocal(ctx context.Context, bin string, args ...string) (*Local, error) {
	bin, err := findPushd(bin)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pushctl-bench-")
	if err != nil {
		return nil, fmt.Errorf("local pushd: %w", err)
	}
	logf, err := os.Create(filepath.Join(dir, "pushd.log"))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("local pushd: %w", err)
	}
	argv := append([]string{"--dev", "--data-dir", dir,
		"--ws-addr", "127.0.0.1:0", "--tcp-addr", "127.0.0.1:0",
		"--push-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0",
		"--connect-rate", "-1"}, args...)
	cmd := exec.Command(bin, argv...)
	// pushd --dev with a --data-dir records where its settings are for
	// pushctl, per user; a throwaway server records them in its own
	// directory instead, so pushctl keeps finding the developer's own
	// dev region.
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = serverProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &Local{Bin: bin, Dir: dir, ConfigFile: filepath.Join(dir, localConfigName),
		cmd: cmd, log: logf, exited: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitConfig(ctx); err != nil {
		tail := s.logTail()
		_ = s.Stop()
		return nil, fmt.Errorf("local pushd: %w%s", err, tail)
	}
	return s, nil
}

// findPushd locates the pushd binary: bin, else next to the running
// executable, else on PATH.
func findPushd(bin string) (string, error) {
	if bin != "" {
		return bin, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "pushd")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath("pushd")
	if err != nil {
		return "", ErrNoPushd
	}
	return p, nil
}

func (s *Local) waitConfig(ctx context.Context) error {
	deadline := time.NewTimer(localStartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(s.ConfigFile); err == nil {
			var cfg struct {
				WSURL     string `json:"ws_url"`
				TCPURL    string `json:"tcp_url"`
				PushURL   string `json:"push_url"`
				Region    string `json:"region"`
				KafkaAddr string `json:"kafka_addr"`
			}
			if err := json.Unmarshal(b, &cfg); err != nil {
				return fmt.Errorf("%s: %w", s.ConfigFile, err)
			}
			if cfg.WSURL == "" || cfg.PushURL == "" {
				return fmt.Errorf("%s names no ws_url or push_url", s.ConfigFile)
			}
			s.WSURL, s.TCPURL, s.PushURL = cfg.WSURL, cfg.TCPURL, cfg.PushURL
			s.Region, s.KafkaAddr = cfg.Region, cfg.KafkaAddr
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.exited:
			return fmt.Errorf("pushd exited before it was ready: %v", s.err)
		case <-deadline.C:
			return fmt.Errorf("pushd wrote no %s within %s", s.ConfigFile, localStartTimeout)
		case <-tick.C:
		}
	}
}

// PID is the server's process id.
func (s *Local) PID() int { return s.cmd.Process.Pid }

// RSS measures the server's resident memory through /proc.
func (s *Local) RSS() Probe { return ProcRSS(s.PID()) }

// CPU measures the CPU time the server has used through /proc: pushd's
// own, not its redis-server's.
func (s *Local) CPU() CPUProbe { return ProcCPU(s.PID()) }

// Stop sends SIGTERM to the server (that pid only), waits for it to drain
// and exit (SIGKILL after 20 s), and removes its directory. The error
// says what did not go to plan: a kill, a directory left behind.
func (s *Local) Stop() error {
	var errs []error
	select {
	case <-s.exited:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(localStopTimeout)
		defer t.Stop()
		select {
		case <-s.exited:
		case <-t.C:
			errs = append(errs, fmt.Errorf("pushd (pid %d) still running %s after SIGTERM; killed it", s.PID(), localStopTimeout))
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	}
	_ = s.log.Close()
	if err := os.RemoveAll(s.Dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", s.Dir, err))
	}
	return errors.Join(errs...)
}

// logTail returns the end of pushd's output, to explain a failed start.
func (s *Local) logTail() string {
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
