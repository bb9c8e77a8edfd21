package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/raftmeta"
)

// devRegion is what --dev adds around a node: a supervised redis-server
// with its data under the data dir (appendfsync always, so nothing acked
// is lost), and an app with generated credentials that survive restarts.
type devRegion struct {
	log   *slog.Logger
	dir   string
	port  int
	creds devCredentials

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	stopping bool
	done     chan struct{} // closed when the supervisor returns
}

// devCredentials are generated on the first --dev start and reused.
type devCredentials struct {
	App          string `json:"app"`
	KeyID        string `json:"key_id"`
	SecretBase64 string `json:"secret_base64"`
	APIKey       string `json:"api_key"`
}

// devInfo is written to <data-dir>/pushctl.json once the node listens;
// pushctl reads it from ./pushd-dev by default, and load tools wait for it.
type devInfo struct {
	PushURL      string `json:"push_url"`
	WSURL        string `json:"ws_url"`
	TCPURL       string `json:"tcp_url,omitempty"`
	AdminURL     string `json:"admin_url"`
	AdminToken   string `json:"admin_token,omitempty"`
	App          string `json:"app"`
	KeyID        string `json:"key_id"`
	SecretBase64 string `json:"secret_base64"`
	APIKey       string `json:"api_key"`
	PID          int    `json:"pid"`
}

func startDevRegion(ctx context.Context, o *options, log *slog.Logger) (*devRegion, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("--dev needs redis-server on PATH: run ./install.sh (Debian package redis-server)")
	}
	d := &devRegion{log: log.With("component", "dev-redis"), dir: o.DataDir, done: make(chan struct{})}
	if err := os.MkdirAll(filepath.Join(d.dir, "redis"), 0o700); err != nil {
		return nil, fmt.Errorf("dev data dir: %w", err)
	}
	if d.creds, err = loadDevCredentials(filepath.Join(d.dir, "dev.json")); err != nil {
		return nil, err
	}
	if d.port, err = freePort(); err != nil {
		return nil, err
	}
	if err := d.start(bin); err != nil {
		return nil, err
	}
	if err := d.waitReady(ctx); err != nil {
		d.stop()
		return nil, err
	}
	go d.supervise(bin)

	o.Redis = fmt.Sprintf("redis://127.0.0.1:%d/0", d.port)
	return d, nil
}

// seedApp creates the dev app in the region's metadata, with the
// credentials kept in dev.json, unless it exists already.
func (d *devRegion) seedApp(ctx context.Context, meta *raftmeta.Store) error {
	if _, ok := meta.State().App(d.creds.App); ok {
		return nil
	}
	secret, err := base64.StdEncoding.DecodeString(d.creds.SecretBase64)
	if err != nil {
		return fmt.Errorf("dev.json secret: %w", err)
	}
	cmd := raftmeta.CreateApp(raftmeta.App{
		ID:      d.creds.App,
		Secrets: []raftmeta.Secret{{KeyID: d.creds.KeyID, Secret: secret}},
		APIKeys: []raftmeta.APIKey{{ID: "key-1", Hash: raftmeta.HashKey(d.creds.APIKey)}},
	})
	cmd.Actor = "dev"
	if _, err := meta.Apply(ctx, cmd); err != nil {
		return fmt.Errorf("seed the dev app: %w", err)
	}
	return nil
}

func loadDevCredentials(path string) (devCredentials, error) {
	var c devCredentials
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &c); err != nil {
			return c, fmt.Errorf("%s: %w (delete it to generate new dev credentials)", path, err)
		}
		return c, nil
	}
	secret := make([]byte, 32)
	key := make([]byte, 24)
	_, _ = rand.Read(secret)
	_, _ = rand.Read(key)
	c = devCredentials{App: "dev", KeyID: "k1", SecretBase64: base64.StdEncoding.EncodeToString(secret), APIKey: "dev-" + hex.EncodeToString(key)}
	b, _ := json.MarshalIndent(c, "", "  ")
	return c, writeFileAtomic(path, b, 0o600)
}

func (d *devRegion) start(bin string) error {
	cmd := exec.Command(bin,
		"--port", fmt.Sprint(d.port), "--bind", "127.0.0.1", "--dir", filepath.Join(d.dir, "redis"),
		"--appendonly", "yes", "--appendfsync", "always", "--save", "",
		// Redis 7.0 reserves a whole stream node per inbox; small nodes
		// keep a one-message inbox at ~1.6 KB instead of ~4.7 KB.
		"--stream-node-max-bytes", "1024",
		"--auto-aof-rewrite-min-size", "256mb",
		"--daemonize", "no", "--logfile", "redis.log")
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()
	d.log.Info("redis-server started", "pid", cmd.Process.Pid, "port", d.port, "dir", filepath.Join(d.dir, "redis"))
	return nil
}

func (d *devRegion) waitReady(ctx context.Context) error {
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", d.port), MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("redis-server did not answer: %w (see %s)", err, filepath.Join(d.dir, "redis", "redis.log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// supervise restarts redis-server when it dies, on the same port and data
// dir, until stop.
func (d *devRegion) supervise(bin string) {
	defer close(d.done)
	for {
		d.mu.Lock()
		exited := d.exited
		d.mu.Unlock()
		<-exited
		d.mu.Lock()
		stopping := d.stopping
		d.mu.Unlock()
		if stopping {
			return
		}
		d.log.Error("redis-server exited; restarting in 1s")
		time.Sleep(time.Second)
		if err := d.start(bin); err != nil {
			d.log.Error("restart redis-server", "err", err)
			return
		}
	}
}

// stop ends redis-server (SIGTERM, then SIGKILL after 5 s) and the
// supervisor.
func (d *devRegion) stop() {
	d.mu.Lock()
	d.stopping = true
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	select {
	case <-d.done:
	case <-time.After(time.Second):
	}
}

// announce writes pushctl.json and prints how to use the region.
func (d *devRegion) announce(node *appliance.Node, adminToken string) error {
	a := node.Addrs()
	info := devInfo{
		PushURL: "http://" + a.Push, WSURL: "ws://" + a.WS + "/v1/ws",
		AdminURL: "http://" + a.Admin, AdminToken: adminToken,
		App: d.creds.App, KeyID: d.creds.KeyID, SecretBase64: d.creds.SecretBase64, APIKey: d.creds.APIKey,
		PID: os.Getpid(),
	}
	if a.TCP != "" {
		info.TCPURL = "tcp://" + a.TCP
	}
	b, _ := json.MarshalIndent(info, "", "  ")
	path := filepath.Join(d.dir, "pushctl.json")
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\npushd dev region is up (node %s)\n", node.ID())
	fmt.Fprintf(&sb, "  device WebSocket  %s\n", info.WSURL)
	if info.TCPURL != "" {
		fmt.Fprintf(&sb, "  device TCP        %s\n", info.TCPURL)
	}
	fmt.Fprintf(&sb, "  push API          %s\n", info.PushURL)
	fmt.Fprintf(&sb, "  admin API         %s\n", info.AdminURL)
	fmt.Fprintf(&sb, "  app               %s\n", info.App)
	fmt.Fprintf(&sb, "  token secret      key id %s, %s (base64)\n", info.KeyID, info.SecretBase64)
	fmt.Fprintf(&sb, "  API key           %s\n", info.APIKey)
	fmt.Fprintf(&sb, "  pushctl settings  %s (read automatically from this directory)\n", path)
	if adminToken != "" {
		fmt.Fprintf(&sb, "  admin token       %s (role admin; also in %s)\n", adminToken, filepath.Join(d.dir, "admin-token"))
	}
	fmt.Fprintf(&sb, "try:\n  ./bin/pushctl listen --device phone-1\n  ./bin/pushctl push --device phone-1 --data hello\n  ./bin/pushctl status\n\n")
	_, err := os.Stdout.WriteString(sb.String())
	return err
}

// writeFileAtomic writes via a temporary file and rename, so a reader
// never sees half a file.
func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
