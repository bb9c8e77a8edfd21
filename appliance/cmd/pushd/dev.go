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
	"github.com/pushd/pushd/streams/redisurl"
)

// devRegion is what --dev adds around a node: a supervised redis-server
// with its data under the data dir (appendfsync always, so nothing acked
// is lost), and an app with generated credentials that survive restarts.
//
// One goroutine, supervise, owns the redis-server process: it starts it
// again whenever it exits and ends it on stop. stop waits for it.
type devRegion struct {
	log   *slog.Logger
	bin   string // the redis-server executable
	dir   string
	port  int
	creds devCredentials
	// external describes the Redis given with --redis, when the region
	// runs none of its own ("" when it does).
	external string
	// kafka is the embedded Kafka's address (--dev-kafka), "" without.
	kafka string

	// The supervisor's timing; newDevRegion sets the devRestart* and
	// devStopGrace defaults, and tests change them before run.
	restartMin   time.Duration
	restartMax   time.Duration
	restartReset time.Duration
	stopGrace    time.Duration

	quit     chan struct{} // closed by stop
	stopOnce sync.Once
	done     chan struct{} // closed when supervise has returned, its child reaped

	mu  sync.Mutex
	pid int // the running redis-server's pid, 0 while none runs; guarded by mu
}

// The dev redis-server's supervision.
const (
	// devRestartMin is how long the supervisor waits before it starts
	// redis-server again after it exited. Every restart that does not
	// last doubles the wait, up to devRestartMax; it keeps trying until
	// stop.
	devRestartMin = 100 * time.Millisecond
	devRestartMax = 5 * time.Second
	// devRestartReset is how long a redis-server must have run for the
	// next restart to wait devRestartMin again.
	devRestartReset = 30 * time.Second
	// devStopGrace is how long stop lets redis-server shut down after
	// SIGTERM before it sends SIGKILL. stop returns once the process is
	// reaped, so within devStopGrace plus the kernel's time to reap a
	// killed process.
	devStopGrace = 5 * time.Second
)

// devChild is one run of redis-server.
type devChild struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{} // closed once cmd.Wait has returned
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
	RedisURL     string `json:"redis_url"`
	Region       string `json:"region"`
	KafkaAddr    string `json:"kafka_addr,omitempty"`
	PID          int    `json:"pid"`
}

func startDevRegion(ctx context.Context, o *options, log *slog.Logger) (*devRegion, error) {
	if o.redisSet {
		// --redis given: a dev region over that Redis (a cluster, a
		// Sentinel set), which pushd neither starts nor supervises.
		return externalDevRegion(o.DataDir, o.redis.url, log)
	}
	d, err := newDevRegion(o.DataDir, log)
	if err != nil {
		return nil, err
	}
	if err := d.run(ctx); err != nil {
		return nil, err
	}
	o.Redis = d.redisURL()
	if o.redis, err = parseRedisSetup(o); err != nil {
		d.stop()
		return nil, err
	}
	return d, nil
}

// externalDevRegion is a dev region whose Redis is the caller's: it has
// the dev app's credentials and writes pushctl.json, and runs no
// redis-server (stop has nothing to stop).
func externalDevRegion(dir string, redis redisurl.Options, log *slog.Logger) (*devRegion, error) {
	d := &devRegion{log: log.With("component", "dev-redis"), dir: dir, external: redis.String(),
		quit: make(chan struct{}), done: make(chan struct{})}
	close(d.done)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("dev data dir: %w", err)
	}
	var err error
	if d.creds, err = loadDevCredentials(filepath.Join(dir, "dev.json")); err != nil {
		return nil, err
	}
	return d, nil
}

// newDevRegion prepares a dev region in dir: the redis data dir, the
// credentials and a free port. Nothing runs until run.
func newDevRegion(dir string, log *slog.Logger) (*devRegion, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("--dev needs redis-server on PATH: run ./install.sh (Debian package redis-server)")
	}
	d := &devRegion{
		log: log.With("component", "dev-redis"), bin: bin, dir: dir,
		restartMin: devRestartMin, restartMax: devRestartMax, restartReset: devRestartReset, stopGrace: devStopGrace,
		quit: make(chan struct{}), done: make(chan struct{}),
	}
	if err := os.MkdirAll(filepath.Join(d.dir, "redis"), 0o700); err != nil {
		return nil, fmt.Errorf("dev data dir: %w", err)
	}
	if d.creds, err = loadDevCredentials(filepath.Join(d.dir, "dev.json")); err != nil {
		return nil, err
	}
	if d.port, err = freePort(); err != nil {
		return nil, err
	}
	return d, nil
}

// run starts redis-server and its supervisor, and waits until it answers.
// After run returns nil, stop must be called.
func (d *devRegion) run(ctx context.Context) error {
	c, err := d.start()
	if err != nil {
		return err
	}
	go d.supervise(c)
	if err := d.waitReady(ctx); err != nil {
		d.stop()
		return err
	}
	return nil
}

// redisURL is the dev redis-server's address as --redis takes it, or the
// description of an external Redis (no password).
func (d *devRegion) redisURL() string {
	if d.external != "" {
		return d.external
	}
	return fmt.Sprintf("redis://127.0.0.1:%d/0", d.port)
}

// redisPID is the running redis-server's pid, or 0 while none runs.
func (d *devRegion) redisPID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pid
}

func (d *devRegion) setPID(pid int) {
	d.mu.Lock()
	d.pid = pid
	d.mu.Unlock()
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

func (d *devRegion) start() (*devChild, error) {
	cmd := exec.Command(d.bin,
		"--port", fmt.Sprint(d.port), "--bind", "127.0.0.1", "--dir", filepath.Join(d.dir, "redis"),
		"--appendonly", "yes", "--appendfsync", "always", "--save", "",
		// Redis 7.0 reserves a whole stream node per inbox; small nodes
		// keep a one-message inbox at ~1.6 KB instead of ~4.7 KB.
		"--stream-node-max-bytes", "1024",
		"--auto-aof-rewrite-min-size", "256mb",
		"--daemonize", "no", "--logfile", "redis.log")
	cmd.SysProcAttr = childProcAttr()
	// Its own process group: a Ctrl-C in pushd's terminal reaches pushd
	// alone, which drains and then stops redis-server itself, instead of
	// also ending redis-server under the draining node.
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	c := &devChild{cmd: cmd, started: time.Now(), exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.exited) }()
	d.setPID(cmd.Process.Pid)
	d.log.Info("redis-server started", "pid", cmd.Process.Pid, "port", d.port, "dir", filepath.Join(d.dir, "redis"))
	return c, nil
}

func (d *devRegion) waitReady(ctx context.Context) error {
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", d.port), MaxRetries: -1})
	defer rdb.Close()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
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
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
}

// supervise owns redis-server from c on: whenever it exits it is started
// again, on the same port and data dir, after a wait that doubles from
// restartMin to restartMax while restarts keep failing; it keeps trying
// until stop. Each exit and each failed start is logged. On stop it ends
// the running redis-server and returns once it is reaped.
func (d *devRegion) supervise(c *devChild) {
	defer close(d.done)
	delay := d.restartMin
	for {
		if c != nil {
			select {
			case <-c.exited:
			case <-d.quit:
				d.terminate(c)
				return
			}
			d.setPID(0)
			ran := time.Since(c.started)
			if ran >= d.restartReset {
				delay = d.restartMin
			}
			d.log.Error("redis-server exited; restarting it", "pid", c.cmd.Process.Pid, "status", c.cmd.ProcessState.String(),
				"ran", ran.Round(time.Millisecond), "restart_in", delay)
		}
		wait := time.NewTimer(delay)
		select {
		case <-wait.C:
		case <-d.quit:
			wait.Stop()
			return
		}
		select {
		case <-d.quit:
			return
		default:
		}
		delay = min(2*delay, d.restartMax)
		var err error
		// A start that races stop is ended by the next turn of the loop.
		if c, err = d.start(); err != nil {
			d.log.Error("restart redis-server", "err", err, "retry_in", delay)
		}
	}
}

// terminate ends c with SIGTERM, or SIGKILL once stopGrace has passed,
// and returns when it is reaped.
func (d *devRegion) terminate(c *devChild) {
	pid := c.cmd.Process.Pid
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	grace := time.NewTimer(d.stopGrace)
	defer grace.Stop()
	select {
	case <-c.exited:
	case <-grace.C:
		d.log.Warn("redis-server did not stop after SIGTERM; killing it", "pid", pid, "grace", d.stopGrace)
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	d.setPID(0)
	d.log.Info("redis-server stopped", "pid", pid)
}

// stop ends the supervisor and redis-server and returns once both are
// gone: redis-server gets SIGTERM, and SIGKILL after stopGrace
// (devStopGrace, 5 s). It may be called more than once.
func (d *devRegion) stop() {
	d.stopOnce.Do(func() { close(d.quit) })
	<-d.done
}

// announce writes pushctl.json and prints how to use the region.
func (d *devRegion) announce(node *appliance.Node, apis *apiServers, adminToken string) error {
	a := node.Addrs()
	info := devInfo{
		PushURL: "http://" + apis.pushAddr(), WSURL: "ws://" + a.WS + "/v1/ws",
		AdminURL: "http://" + apis.adminAddr(), AdminToken: adminToken,
		App: d.creds.App, KeyID: d.creds.KeyID, SecretBase64: d.creds.SecretBase64, APIKey: d.creds.APIKey,
		RedisURL: d.redisURL(), Region: node.Region(), KafkaAddr: d.kafka, PID: os.Getpid(),
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
	fmt.Fprintf(&sb, "\npushd dev region %s is up (node %s)\n", node.Region(), node.ID())
	fmt.Fprintf(&sb, "  device WebSocket  %s\n", info.WSURL)
	if info.TCPURL != "" {
		fmt.Fprintf(&sb, "  device TCP        %s\n", info.TCPURL)
	}
	fmt.Fprintf(&sb, "  dev page          http://%s/dev/ (a device in your browser: pushctl push --device browser-1 --data hello)\n", a.WS)
	fmt.Fprintf(&sb, "  push API          %s\n", info.PushURL)
	fmt.Fprintf(&sb, "  admin API         %s\n", info.AdminURL)
	fmt.Fprintf(&sb, "  app               %s\n", info.App)
	fmt.Fprintf(&sb, "  token secret      key id %s, %s (base64)\n", info.KeyID, info.SecretBase64)
	fmt.Fprintf(&sb, "  API key           %s\n", info.APIKey)
	if d.external != "" {
		fmt.Fprintf(&sb, "  redis             %s (given with --redis: pushd runs none of its own)\n", info.RedisURL)
	} else {
		fmt.Fprintf(&sb, "  dev redis         %s (appendfsync always, restarted if it exits)\n", info.RedisURL)
	}
	if d.kafka != "" {
		fmt.Fprintf(&sb, "  embedded Kafka    %s (kfake, for development; other regions: --bridge-brokers %s)\n", d.kafka, d.kafka)
	}
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
