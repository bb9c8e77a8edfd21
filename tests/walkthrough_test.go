// Package tests holds black-box tests: they build the pushd and pushctl
// binaries and drive them as a user would, through their command lines,
// listeners and files only.
package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/internal/testmain"
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
		args := []string{"build", "-o", filepath.Join(dir, name)}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, pkg)...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, out)
			os.Exit(1)
		}
	}
	bin = dir
	// The drills mostly wait on processes: four at a time keep two
	// cores busy (-parallel overrides).
	code := testmain.Run(m, 4)
	os.RemoveAll(dir)
	os.Exit(code)
}

// devRegion is a `pushd --dev` process in its own directory.
type devRegion struct {
	dir  string
	cmd  *exec.Cmd
	out  *logBuffer // stdout: the banner with the dev credentials
	logs *logBuffer // stderr: the log
	info devInfo    // pushd-dev/pushctl.json
}

// devInfo is the part of pushd-dev/pushctl.json the tests read.
type devInfo struct {
	PushURL      string `json:"push_url"`
	WSURL        string `json:"ws_url"`
	AdminURL     string `json:"admin_url"`
	CAFile       string `json:"ca_file"`
	App          string `json:"app"`
	KeyID        string `json:"key_id"`
	SecretBase64 string `json:"secret_base64"`
	APIKey       string `json:"api_key"`
	RedisURL     string `json:"redis_url"`
}

// logBuffer collects a process's output; exec copies into it from its
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

// startDev runs pushd --dev, with extra flags, in a fresh directory on
// free loopback ports and waits until it has written
// pushd-dev/pushctl.json and printed its banner.
func startDev(t *testing.T, extra ...string) *devRegion {
	t.Helper()
	r := &devRegion{dir: t.TempDir(), out: &logBuffer{}, logs: &logBuffer{}}
	r.cmd = exec.Command(filepath.Join(bin, "pushd"), append([]string{"--dev",
		"--ws-addr", "127.0.0.1:0", "--tcp-addr", "127.0.0.1:0", "--push-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"}, extra...)...)
	r.cmd.Dir = r.dir
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			_ = r.cmd.Process.Kill()
			_ = r.cmd.Wait()
		}
		failOnRace(t, "pushd --dev", r.logs)
	})
	path := filepath.Join(r.dir, "pushd-dev", "pushctl.json")
	poll.Until(t, 30*time.Second, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &r.info)
	})
	// The banner follows the file.
	poll.Until(t, 10*time.Second, func() error {
		if !strings.Contains(r.out.String(), "pushctl settings") {
			return fmt.Errorf("no banner on stdout yet: %q", r.out)
		}
		return nil
	})
	return r
}

// banner returns the value printed after label in pushd --dev's banner
// ("  API key           dev-…").
func (r *devRegion) banner(t *testing.T, label string) string {
	t.Helper()
	for _, line := range strings.Split(r.out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "  "+label+" "); ok {
			return strings.TrimSpace(rest)
		}
	}
	t.Fatalf("pushd --dev printed no %q line:\n%s", label, r.out)
	return ""
}

// redisClient connects to the dev redis-server at url, the one pushd
// --dev printed.
func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("dev redis URL %q: %v", url, err)
	}
	opts.MaxRetries = -1
	opts.DialTimeout, opts.ReadTimeout = time.Second, time.Second
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
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
	return startListener(t, cmd)
}

// startListener starts cmd, a pushctl listen -o json, and reads its JSON
// lines; the test's cleanup stops it.
func startListener(t *testing.T, cmd *exec.Cmd) *listener {
	t.Helper()
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

// TestWalkthrough_DevRegion is the README's five minutes: a dev region that
// prints its credentials and runs its redis-server with appendfsync
// always, a device listening, pushes (pushctl's and the README's curl)
// delivered live, a push stored while the device is away that survives a
// kill -9 of the supervised redis-server and is replayed after a reconnect
// whose WELCOME says recovered: true, the device's state, and a clean stop
// that takes the dev redis-server down with it.
func TestWalkthrough_DevRegion(t *testing.T) {
	t.Parallel()
	r := startDev(t)

	// The banner prints the dev app's credentials, as pushctl.json holds
	// them.
	if got := r.banner(t, "app"); got != "dev" || r.info.App != "dev" {
		t.Fatalf("app %q printed, %q in pushctl.json", got, r.info.App)
	}
	if secret, err := base64.StdEncoding.DecodeString(r.info.SecretBase64); err != nil || len(secret) < 32 {
		t.Fatalf("token secret in pushctl.json %q: %d bytes, %v", r.info.SecretBase64, len(secret), err)
	}
	if got, want := r.banner(t, "token secret"), fmt.Sprintf("key id %s, %s (base64)", r.info.KeyID, r.info.SecretBase64); r.info.KeyID == "" || got != want {
		t.Fatalf("token secret printed %q, want %q", got, want)
	}
	apiKey := r.banner(t, "API key")
	if apiKey == "" || apiKey != r.info.APIKey {
		t.Fatalf("API key printed %q, %q in pushctl.json", apiKey, r.info.APIKey)
	}
	redisURL, _, _ := strings.Cut(r.banner(t, "dev redis"), " ")
	if redisURL != r.info.RedisURL {
		t.Fatalf("dev redis printed %q, %q in pushctl.json", redisURL, r.info.RedisURL)
	}
	// The dev redis-server loses nothing it acked.
	rdb := redisClient(t, redisURL)
	ctx := context.Background()
	if got, err := rdb.ConfigGet(ctx, "appendfsync").Result(); err != nil || got["appendfsync"] != "always" {
		t.Fatalf("dev redis CONFIG GET appendfsync: %v, %v", got, err)
	}

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

	// The README's curl, with the printed API key.
	id := curlPush(t, r.info.PushURL, apiKey, `{"app":"dev","devices":["phone-1"],"data":"hello","priority":"high"}`)
	if p := l.next(t, "PUSH"); p["payload"] != "hello" || p["id"] != id {
		t.Fatalf("listen printed %v after the curl push %s", p, id)
	}
	// listen acks what it printed; let that ack reach Redis before the
	// device goes, or the inbox would rightly keep the message for it.
	poll.Until(t, 10*time.Second, func() error {
		out, err := r.pushctl(t, "device", "show", "phone-1", "-o", "json")
		if err != nil {
			return err
		}
		if !strings.Contains(out, `"acked": 2`) && !strings.Contains(out, `"acked":2`) {
			return fmt.Errorf("the curl push is not acked yet: %s", out)
		}
		return nil
	})

	// Offline: the push is stored, and replayed when the device is back.
	l.stop()
	poll.Until(t, 10*time.Second, func() error {
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

	// pushd --dev supervises its redis-server: killed, it is started
	// again, and with appendfsync always the stored push survives.
	killed := devRedisPids(r)
	if len(killed) != 1 {
		t.Fatalf("redis-server pids in the log: %v\n%s", killed, r.logs)
	}
	if err := syscall.Kill(killed[0], syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 the dev redis-server (pid %d): %v", killed[0], err)
	}
	poll.Until(t, 20*time.Second, func() error {
		if pids := devRedisPids(r); len(pids) < 2 {
			return fmt.Errorf("redis-server not restarted: pids %v", pids)
		}
		return rdb.Ping(ctx).Err()
	})
	if got, err := rdb.ConfigGet(ctx, "appendfsync").Result(); err != nil || got["appendfsync"] != "always" {
		t.Fatalf("restarted dev redis CONFIG GET appendfsync: %v, %v", got, err)
	}
	poll.Until(t, 20*time.Second, func() error {
		out, err := r.pushctl(t, "device", "show", "phone-1", "-o", "json")
		if err != nil {
			return err
		}
		var st struct {
			InboxLen int64 `json:"inbox_len"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return fmt.Errorf("device show %q: %w", out, err)
		}
		if st.InboxLen != 1 {
			return fmt.Errorf("after the redis-server restart: %s", out)
		}
		return nil
	})

	l2 := r.listen(t, "phone-1")
	if w := l2.next(t, "WELCOME"); w["recovered"] != true {
		t.Fatalf("WELCOME after the reconnect %v, want recovered: true", w)
	}
	if p := l2.next(t, "PUSH"); p["payload"] != "while you were away" {
		t.Fatalf("replayed %v", p)
	}
	poll.Until(t, 10*time.Second, func() error {
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
		if st.Acked != 3 || st.InboxLen != 0 {
			return fmt.Errorf("device state %s", out)
		}
		return nil
	})
	l2.stop()

	redisPids := devRedisPids(r)
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
	for _, pid := range redisPids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("the dev redis-server (pid %d) outlived pushd (kill -0: %v)", pid, err)
		}
	}
}

// curlPush is the README's curl: POST /v1/push with the API key; it
// returns the message id.
func curlPush(t *testing.T, pushURL, apiKey, body string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, pushURL+"/v1/push", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var ans struct {
		ID      string `json:"id"`
		Stored  bool   `json:"stored"`
		Results []struct {
			Status string `json:"status"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b, &ans); err != nil || resp.StatusCode != http.StatusOK || !ans.Stored ||
		len(ans.Results) != 1 || ans.Results[0].Status != "delivered" {
		t.Fatalf("curl push: %s %s (%v)", resp.Status, b, err)
	}
	return ans.ID
}

// redisStarted matches the log line of each dev redis-server start.
var redisStarted = regexp.MustCompile(`msg="redis-server started".* pid=(\d+)`)

// devRedisPids reads the pids of the dev redis-servers pushd started, in
// order, from its log.
func devRedisPids(r *devRegion) []int {
	var pids []int
	for _, m := range redisStarted.FindAllStringSubmatch(r.logs.String(), -1) {
		var pid int
		if _, err := fmt.Sscan(m[1], &pid); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestWalkthrough_InstallOnABareHost runs the README's first command,
// ./install.sh, on hosts that lack what it installs, with PATH reduced to
// a few stand-ins: it installs the Debian packages through apt-get, and
// without apt-get it stops and says what to install.
func TestWalkthrough_InstallOnABareHost(t *testing.T) {
	t.Parallel()
	script, err := os.ReadFile("../install.sh")
	if err != nil {
		t.Fatal(err)
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal(err)
	}
	// stand-ins: a fake apt-get logs how it was called; id says root, so
	// no sudo is needed; redis-server only has to exist.
	const fakeAptGet = "#!/bin/sh\necho \"DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*\" >>\"$APT_LOG\"\n"
	cases := []struct {
		name    string
		args    []string
		have    []string // commands on PATH besides dirname and id
		wantErr string
		wantApt string
	}{
		{name: "no apt-get, no redis-server",
			wantErr: "install.sh: redis-server is missing and this host has no apt-get: install.sh supports Debian and Ubuntu"},
		{name: "dev tools, no apt-get, no gcc", args: []string{"--dev-tools"}, have: []string{"redis-server"},
			wantErr: "install.sh: gcc is missing and this host has no apt-get"},
		{name: "apt-get installs what is missing", args: []string{"--dev-tools"}, have: []string{"apt-get", "env"},
			wantApt: "DEBIAN_FRONTEND= update -qq\n" +
				"DEBIAN_FRONTEND=noninteractive install -y -qq redis-server\n" +
				"DEBIAN_FRONTEND=noninteractive install -y -qq gcc\n" +
				"DEBIAN_FRONTEND=noninteractive install -y -qq chromium\n" +
				"DEBIAN_FRONTEND=noninteractive install -y -qq zsh\n" +
				"DEBIAN_FRONTEND=noninteractive install -y -qq systemd\n",
			wantErr: "install.sh: Go 1.26 or newer is required"},
		{name: "no go", have: []string{"redis-server"}, wantErr: "install.sh: Go 1.26 or newer is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pathDir := filepath.Join(dir, "path")
			if err := os.MkdirAll(pathDir, 0o755); err != nil {
				t.Fatal(err)
			}
			link := func(name string) {
				real, err := exec.LookPath(name)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(real, filepath.Join(pathDir, name)); err != nil {
					t.Fatal(err)
				}
			}
			write := func(name, body string) {
				if err := os.WriteFile(filepath.Join(pathDir, name), []byte(body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			link("dirname")
			write("id", "#!/bin/sh\necho 0\n")
			for _, c := range tc.have {
				switch c {
				case "apt-get":
					write(c, fakeAptGet)
				case "redis-server":
					write(c, "#!/bin/sh\nexit 0\n")
				default:
					link(c)
				}
			}
			// A copy, so that nothing it does can touch the repository.
			repo := filepath.Join(dir, "repo")
			if err := os.MkdirAll(repo, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(repo, "install.sh"), script, 0o755); err != nil {
				t.Fatal(err)
			}
			aptLog := filepath.Join(dir, "apt.log")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bash, append([]string{filepath.Join(repo, "install.sh")}, tc.args...)...)
			cmd.Env = []string{"PATH=" + pathDir, "HOME=" + dir, "APT_LOG=" + aptLog}
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("install.sh: %v, want exit status 1; stdout %q, stderr %q", err, out.String(), errOut.String())
			}
			if !strings.HasPrefix(errOut.String(), tc.wantErr) {
				t.Fatalf("stderr %q, want it to start with %q", errOut.String(), tc.wantErr)
			}
			apt, _ := os.ReadFile(aptLog)
			if string(apt) != tc.wantApt {
				t.Fatalf("apt-get calls %q, want %q", apt, tc.wantApt)
			}
			if strings.Contains(out.String(), "building") {
				t.Fatalf("install.sh went on to build: %q", out.String())
			}
		})
	}
}

// TestWalkthrough_DevRegionWithTLS is the walkthrough with --dev-tls: TLS
// on every hop of a dev region. pushctl finds the dev CA in
// pushd-dev/pushctl.json and pushes, listens and lists certificates with
// it; a push waits while the device is away and is replayed; the dev
// Redis serves TLS only, to clients with a certificate of the dev CA
// that log in as pushd's ACL user, which may not run CONFIG; the admin
// API refuses plain HTTP.
func TestWalkthrough_DevRegionWithTLS(t *testing.T) {
	t.Parallel()
	r := startDev(t, "--dev-tls")
	for _, u := range []string{r.info.PushURL, r.info.WSURL, r.info.AdminURL, r.info.RedisURL} {
		if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "wss://") && !strings.HasPrefix(u, "rediss://") {
			t.Fatalf("pushctl.json names a URL without TLS: %s", u)
		}
	}
	if r.info.CAFile == "" || !strings.Contains(r.banner(t, "TLS"), r.info.CAFile) {
		t.Fatalf("ca_file %q; banner:\n%s", r.info.CAFile, r.out)
	}

	l := r.listen(t, "phone-1")
	if w := l.next(t, "WELCOME"); w["recovered"] != true {
		t.Fatalf("first WELCOME %v", w)
	}
	out, err := r.pushctl(t, "push", "--device", "phone-1", "--data", "over tls", "--wait-ack", "-o", "json")
	if err != nil || !strings.Contains(out, `"delivered"`) {
		t.Fatalf("push: %s %v", out, err)
	}
	if p := l.next(t, "PUSH"); p["payload"] != "over tls" {
		t.Fatalf("listen printed %v", p)
	}
	l.stop()
	poll.Until(t, 10*time.Second, func() error {
		out, err := r.pushctl(t, "push", "--device", "phone-1", "--data", "while away", "-o", "json")
		if err != nil || !strings.Contains(out, `"stored"`) || strings.Contains(out, `"delivered"`) {
			return fmt.Errorf("offline push: %s %v", out, err)
		}
		return nil
	})
	l2 := r.listen(t, "phone-1")
	if w := l2.next(t, "WELCOME"); w["recovered"] != true {
		t.Fatalf("WELCOME after the reconnect %v", w)
	}
	if p := l2.next(t, "PUSH"); p["payload"] != "while away" {
		t.Fatalf("replayed %v", p)
	}
	l2.stop()

	out, err = r.pushctl(t, "tls", "list")
	if err != nil || !strings.Contains(out, "true") {
		t.Fatalf("tls list: %s %v", out, err)
	}
	resp, err := http.Get("http://" + strings.TrimPrefix(r.info.AdminURL, "https://") + "/v1/admin/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("admin API over plain HTTP: %s", resp.Status)
	}

	// The dev Redis: TLS with a dev CA certificate, and pushd's user.
	node := filepath.Join(r.dir, "pushd-dev", "tls", "node.pem")
	cert, err := tls.LoadX509KeyPair(node, node)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(r.info.CAFile)
	pool.AppendCertsFromPEM(caPEM)
	password, err := os.ReadFile(filepath.Join(r.dir, "pushd-dev", "redis-password"))
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(r.info.RedisURL, "rediss://"), "/0")
	ctx := context.Background()
	dial := func(tc *tls.Config, user, pw string) error {
		rdb := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: tc, Username: user, Password: pw, MaxRetries: -1, DialTimeout: time.Second})
		defer rdb.Close()
		return rdb.Ping(ctx).Err()
	}
	withCert := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}}
	if err := dial(withCert, "pushd", strings.TrimSpace(string(password))); err != nil {
		t.Fatalf("pushd's user with the dev CA's certificate: %v", err)
	}
	for name, err := range map[string]error{
		"plain TCP":             dial(nil, "pushd", strings.TrimSpace(string(password))),
		"no client certificate": dial(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, "pushd", strings.TrimSpace(string(password))),
		"the wrong password":    dial(withCert, "pushd", "guess"),
		"Redis's default user":  dial(withCert, "", ""),
	} {
		if err == nil {
			t.Errorf("the dev Redis took a client with %s", name)
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: withCert, Username: "pushd", Password: strings.TrimSpace(string(password))})
	defer rdb.Close()
	if err := rdb.ConfigGet(ctx, "appendfsync").Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("CONFIG GET as pushd's user: %v, want NOPERM", err)
	}
}
