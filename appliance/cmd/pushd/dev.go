package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
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
	"github.com/pushd/pushd/regiontls"
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
	// rt is the region's TLS of a --dev-tls region, nil otherwise. Then
	// redis-server serves TLS only, asks for a client certificate of the
	// dev CA, and knows one ACL user, pushd, whose password is in
	// <dir>/redis-password.
	rt  *regiontls.Node
	url redisurl.Options // how pushd reaches it, credentials included
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

	// pointed is the settings path announce recorded in the settings
	// pointer, "" until then.
	pointed string
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
// pushctl reads it from ./pushd-dev, or from anywhere through the
// settings pointer (devPointerPath), and load tools wait for it.
type devInfo struct {
	PushURL    string `json:"push_url"`
	WSURL      string `json:"ws_url"`
	TCPURL     string `json:"tcp_url,omitempty"`
	AdminURL   string `json:"admin_url"`
	AdminToken string `json:"admin_token,omitempty"`
	// CAFile is what pushctl trusts for this region: the dev CA's bundle
	// with --dev-tls, else the device listeners' certificate (--tls-cert).
	CAFile       string `json:"ca_file,omitempty"`
	App          string `json:"app"`
	KeyID        string `json:"key_id"`
	SecretBase64 string `json:"secret_base64"`
	APIKey       string `json:"api_key"`
	RedisURL     string `json:"redis_url"`
	Region       string `json:"region"`
	KafkaAddr    string `json:"kafka_addr,omitempty"`
	PID          int    `json:"pid"`
}

// startDevRegion starts the dev redis-server and points o at it; with rt
// (--dev-tls) over TLS with an ACL user, and with the devices served
// with the node's certificate. With --redis given it runs no
// redis-server: the dev region lives in that Redis (a cluster, a
// Sentinel set), which pushd neither starts nor supervises.
func startDevRegion(ctx context.Context, o *options, rt *regiontls.Node, log *slog.Logger) (*devRegion, error) {
	if o.redisSet {
		return externalDevRegion(o.DataDir, o.redis.url, log)
	}
	d, err := newDevRegion(o.DataDir, log)
	if err != nil {
		return nil, err
	}
	if rt != nil {
		if err := d.secure(rt); err != nil {
			return nil, err
		}
		o.RedisUser, o.RedisPasswordFile = devRedisUser, d.passwordFile()
		node := filepath.Join(rt.Dir(), regiontls.NodeFile)
		o.TLSCert, o.TLSKey = node, node
	}
	o.Redis = d.redisURL()
	if o.redis, err = parseRedisSetup(o); err != nil {
		return nil, err
	}
	// The node adds its credentials to o.redis itself; the supervisor's
	// own client needs them now.
	own := o.redis
	if err := own.credentials(o, rt); err != nil {
		return nil, err
	}
	d.url = own.url
	if err := d.run(ctx); err != nil {
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

// devRedisUser is the ACL user of a --dev-tls Redis.
const devRedisUser = "pushd"

// redisACL is the ACL file of a region's Redis for pushd's user, given
// the SHA-256 of its password (hex): the default user is off, and pushd's
// may run every command but the dangerous ones (CONFIG, FLUSHALL, KEYS,
// DEBUG, …) on pushd's keys only, and no pub/sub. INFO is dangerous to
// Redis but allowed back: the heartbeat script reads the server's run_id
// with it, which is how a node learns that Redis restarted or failed over
// (streams.Store.Heartbeat). systemd/redis-pushd.acl
// is the same with a placeholder for the hash (a test holds them equal).
func redisACL(passwordSHA256 string) string {
	return "user default off\n" +
		"user " + devRedisUser + " on #" + passwordSHA256 + " ~pushd:* resetchannels +@all -@dangerous +info\n"
}

func (d *devRegion) passwordFile() string { return filepath.Join(d.dir, "redis-password") }

// secure prepares a --dev-tls Redis: a service certificate of the dev CA
// for 127.0.0.1, and the pushd user's password (made once, kept in
// <dir>/redis-password, 0600) with the ACL file holding its hash.
func (d *devRegion) secure(rt *regiontls.Node) error {
	d.rt = rt
	ca := rt.CA()
	if ca == nil {
		return errors.New("--dev-tls: this dev region's data dir has no CA key (" + filepath.Join(rt.Dir(), regiontls.CAKeyFile) + ")")
	}
	key, err := regiontls.NewKey()
	if err != nil {
		return err
	}
	csr, err := regiontls.NewCSR(key, "dev-redis", regiontls.ParseNames([]string{"127.0.0.1", "localhost"}))
	if err != nil {
		return err
	}
	certPEM, _, err := ca.Issue(csr, regiontls.KindService, 0)
	if err != nil {
		return err
	}
	keyPEM, err := regiontls.EncodeKey(key)
	if err != nil {
		return err
	}
	redisDir := filepath.Join(d.dir, "redis")
	if err := regiontls.WriteFile(redisDir, "tls.key", keyPEM, 0o600); err != nil {
		return err
	}
	if err := regiontls.WriteFile(redisDir, "tls.crt", certPEM, 0o644); err != nil {
		return err
	}
	pw, err := os.ReadFile(d.passwordFile())
	if errors.Is(err, fs.ErrNotExist) {
		pw = []byte(rand.Text())
		err = writeFileAtomic(d.passwordFile(), append(pw, '\n'), 0o600)
	}
	if err != nil {
		return fmt.Errorf("dev redis password: %w", err)
	}
	sum := sha256.Sum256(bytes.TrimSpace(pw))
	return writeFileAtomic(filepath.Join(redisDir, "users.acl"), []byte(redisACL(hex.EncodeToString(sum[:]))), 0o600)
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
	if d.url, err = redisurl.Parse(d.redisURL()); err != nil {
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
	switch {
	case d.external != "":
		return d.external
	case d.rt != nil:
		return fmt.Sprintf("rediss://127.0.0.1:%d/0", d.port)
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
	redisDir := filepath.Join(d.dir, "redis")
	args := []string{"--port", fmt.Sprint(d.port), "--bind", "127.0.0.1", "--dir", redisDir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "",
		// Redis 7.0 reserves a whole stream node per inbox; small nodes
		// keep a one-message inbox at ~1.6 KB instead of ~4.7 KB.
		"--stream-node-max-bytes", "1024",
		"--auto-aof-rewrite-min-size", "256mb",
		"--daemonize", "no", "--logfile", "redis.log"}
	if d.rt != nil {
		// TLS only, clients with a certificate of the dev CA, and the
		// ACL of secure (hashes only: no password on this command line).
		// Absolute paths: redis-server reads them after moving to --dir.
		abs := func(dir, name string) string {
			p, _ := filepath.Abs(filepath.Join(dir, name))
			return p
		}
		args = append(args, "--port", "0", "--tls-port", fmt.Sprint(d.port),
			"--tls-cert-file", abs(redisDir, "tls.crt"), "--tls-key-file", abs(redisDir, "tls.key"),
			"--tls-ca-cert-file", abs(d.rt.Dir(), regiontls.BundleFile), "--tls-auth-clients", "yes",
			"--aclfile", abs(redisDir, "users.acl"))
	}
	cmd := exec.Command(d.bin, args...)
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
	opts := d.url.Universal().Simple()
	opts.MaxRetries = -1
	rdb := redis.NewClient(opts)
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
	d.stopOnce.Do(func() {
		d.unpoint()
		close(d.quit)
	})
	<-d.done
}

// announce writes pushctl.json and the settings pointer, and prints how
// to use the region. tlsCert is the device listeners' certificate, ""
// without TLS; a --dev-tls region (d.rt) runs TLS on every hop.
func (d *devRegion) announce(node *appliance.Node, apis *apiServers, adminToken, tlsCert string) (err error) {
	a := node.Addrs()
	web, ws, tcp, page := "http://", "ws://", "tcp://", "http://"
	info := devInfo{
		AdminToken: adminToken,
		App:        d.creds.App, KeyID: d.creds.KeyID, SecretBase64: d.creds.SecretBase64, APIKey: d.creds.APIKey,
		RedisURL: d.redisURL(), Region: node.Region(), KafkaAddr: d.kafka, PID: os.Getpid(),
	}
	switch {
	case d.rt != nil:
		web, ws, tcp, page = "https://", "wss://", "tls://", "https://"
		if info.CAFile, err = filepath.Abs(filepath.Join(d.rt.Dir(), regiontls.BundleFile)); err != nil {
			return err
		}
	case tlsCert != "":
		ws, tcp, page = "wss://", "tls://", "https://"
		if info.CAFile, err = filepath.Abs(tlsCert); err != nil {
			return err
		}
	}
	info.PushURL, info.AdminURL = web+apis.pushAddr(), web+apis.adminAddr()
	info.WSURL = ws + a.WS + "/v1/ws"
	if a.TCP != "" {
		info.TCPURL = tcp + a.TCP
	}
	b, _ := json.MarshalIndent(info, "", "  ")
	path, err := filepath.Abs(filepath.Join(d.dir, "pushctl.json"))
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return err
	}
	// pushctl reads ./pushd-dev by itself; a data dir elsewhere is
	// recorded in the settings pointer for it.
	found := "read automatically from this directory"
	if filepath.Clean(d.dir) != devDataDir {
		if err := d.point(path); err != nil {
			found = "give it to pushctl with --config"
			d.log.Warn("could not record where the dev settings are: pushctl finds them only with --config", "err", err)
		} else {
			found = "found by pushctl from any directory while this region runs"
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\npushd dev region %s is up (node %s)\n", node.Region(), node.ID())
	fmt.Fprintf(&sb, "  device WebSocket  %s\n", info.WSURL)
	if info.TCPURL != "" {
		fmt.Fprintf(&sb, "  device TCP        %s\n", info.TCPURL)
	}
	if info.CAFile != "" && d.rt == nil {
		fmt.Fprintf(&sb, "  device TLS        certificate %s (pushctl trusts it)\n", info.CAFile)
	}
	fmt.Fprintf(&sb, "  dev page          %s%s/dev/ (a device in your browser: pushctl push --device browser-1 --data hello)\n", page, a.WS)
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
	if d.rt != nil {
		fmt.Fprintf(&sb, "  TLS               every hop, with the dev CA %s (Raft and admin mutual TLS; redis user %s, password in %s)\n",
			info.CAFile, devRedisUser, d.passwordFile())
	}
	if d.kafka != "" {
		fmt.Fprintf(&sb, "  embedded Kafka    %s (kfake, for development; other regions: --bridge-brokers %s)\n", d.kafka, d.kafka)
	}
	fmt.Fprintf(&sb, "  pushctl settings  %s (%s)\n", path, found)
	if adminToken != "" {
		fmt.Fprintf(&sb, "  admin token       %s (role admin; also in %s)\n", adminToken, filepath.Join(d.dir, "admin-token"))
	}
	fmt.Fprintf(&sb, "try:\n  ./bin/pushctl listen --device phone-1\n  ./bin/pushctl push --device phone-1 --data hello\n  ./bin/pushctl status\n\n")
	_, err = os.Stdout.WriteString(sb.String())
	return err
}

// devDataDir is --dev's default data dir, where pushctl looks by itself.
const devDataDir = "pushd-dev"

// devPointerPath is the file naming the settings of the dev region
// started last with a data dir other than ./pushd-dev: pushctl reads it
// when it finds no settings otherwise, so such a region is found from
// any directory. It is per user: $XDG_CONFIG_HOME/pushd/dev-settings, or
// ~/.config/pushd/dev-settings.
func devPointerPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "pushd", "dev-settings"), nil
}

// point records settings (an absolute path) in the settings pointer.
func (d *devRegion) point(settings string) error {
	p, err := devPointerPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	if err := writeFileAtomic(p, []byte(settings+"\n"), 0o600); err != nil {
		return err
	}
	d.pointed = settings
	return nil
}

// unpoint removes the settings pointer if it still names this region's
// settings: another dev region started since keeps its own.
func (d *devRegion) unpoint() {
	if d.pointed == "" {
		return
	}
	p, err := devPointerPath()
	if err != nil {
		return
	}
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == d.pointed {
		_ = os.Remove(p)
	}
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
