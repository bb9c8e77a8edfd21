package js_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/freeport"

	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams/streamstest"
)

// The SDK's own suites are JavaScript: test/*.test.js, run by Node.js's
// test runner. codec.test.js checks the codec on the protocol document's
// examples; client.test.js runs the client in Node.js (with the ws
// package) against a fake server and against a real region;
// browser.test.js drives pages in headless Chromium (puppeteer-core)
// against the same region and against pushd --dev's page. This file sets
// up what they run against, real pushd processes and a real
// redis-server, and runs them. Node.js, Chromium and the npm packages are
// required: `./install.sh --dev-tools` installs them. A machine without
// them fails here instead of skipping, so CI cannot pass without running
// the JavaScript.

// sizeBudget bounds pushd.js minified (esbuild --minify), in bytes: 24 KiB
// until group cursors and CATCHUP (about 3.6 KB minified, 1 KB gzipped)
// came in.
const sizeBudget = 28 << 10

type toolset struct {
	node, chromium, pushd string
	err                   error
}

var (
	toolsOnce sync.Once
	tools     toolset
)

// needTools finds node, chromium and the npm packages, and builds pushd
// once; it fails the test, saying how to install them, when one is
// missing.
func needTools(t *testing.T) toolset {
	t.Helper()
	if underRace {
		t.Skip("the race pass runs no JavaScript: nothing of Go's races in it, and the first pass ran it")
	}
	toolsOnce.Do(func() { tools = findTools() })
	if tools.err != nil {
		t.Fatalf("%v\nrun ./install.sh --dev-tools: it installs Node.js's packages for the SDK (npm ci in appliance/client/js) and Debian's chromium", tools.err)
	}
	return tools
}

func findTools() toolset {
	var ts toolset
	var err error
	if ts.node, err = exec.LookPath("node"); err != nil {
		ts.err = fmt.Errorf("node (Node.js 20 or newer) is not on PATH")
		return ts
	}
	out, err := exec.Command(ts.node, "-e", "process.stdout.write(process.versions.node)").Output()
	var major int
	if err == nil {
		_, err = fmt.Sscanf(string(out), "%d.", &major)
	}
	if err != nil || major < 20 {
		ts.err = fmt.Errorf("node %q: Node.js 20 or newer is required (%v)", out, err)
		return ts
	}
	ts.chromium = os.Getenv("PUSHD_CHROMIUM")
	for _, c := range []string{"chromium", "chromium-browser"} {
		if ts.chromium != "" {
			break
		}
		ts.chromium, _ = exec.LookPath(c)
	}
	if ts.chromium == "" {
		ts.err = fmt.Errorf("chromium is not on PATH (Debian package chromium; or set PUSHD_CHROMIUM)")
		return ts
	}
	for _, pkg := range []string{"ws", "puppeteer-core", "typescript", "esbuild"} {
		if _, err := os.Stat(filepath.Join("node_modules", pkg, "package.json")); err != nil {
			ts.err = fmt.Errorf("the npm package %s is not installed in appliance/client/js/node_modules", pkg)
			return ts
		}
	}
	dir, err := os.MkdirTemp("", "pushd-js-bin")
	if err != nil {
		ts.err = err
		return ts
	}
	ts.pushd = filepath.Join(dir, "pushd")
	if out, err := exec.Command("go", "build", "-o", ts.pushd, "../../cmd/pushd").CombinedOutput(); err != nil {
		ts.err = fmt.Errorf("build pushd: %v\n%s", err, out)
	}
	return ts
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tools.pushd != "" {
		_ = os.RemoveAll(filepath.Dir(tools.pushd))
	}
	os.Exit(code)
}

// TestJS_TypesAndDeclarations: pushd.js type-checks (JSDoc, tsc
// --checkJs, strict), and pushd.d.ts is what tsc generates from it.
func TestJS_TypesAndDeclarations(t *testing.T) {
	ts := needTools(t)
	t.Parallel() // CPU-bound, beside TestJS_Suites's waits
	// One run checks the types and writes the declarations.
	tsc := filepath.Join("node_modules", "typescript", "bin", "tsc")
	dir := t.TempDir()
	if out, err := exec.Command(ts.node, tsc, "-p", "tsconfig.decl.json", "--outDir", dir).CombinedOutput(); err != nil {
		t.Fatalf("tsc --checkJs on pushd.js: %v\n%s", err, out)
	}
	want, err := os.ReadFile(filepath.Join(dir, "pushd.d.ts"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("pushd.d.ts")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("pushd.d.ts is not what tsc generates from pushd.js (%v); regenerate it in appliance/client/js with\n\tnpx tsc -p tsconfig.decl.json", err)
	}
}

// TestJS_MinifiedSize: pushd.js minified by the pinned esbuild stays
// within sizeBudget. docs/performance.md quotes the figures it logs.
func TestJS_MinifiedSize(t *testing.T) {
	needTools(t)
	t.Parallel()
	out := filepath.Join(t.TempDir(), "pushd.min.js")
	// node_modules/.bin/esbuild is the platform's binary or a Node.js
	// shim, depending on how npm installed it: run it as it is.
	if b, err := exec.Command(filepath.Join("node_modules", ".bin", "esbuild"), "pushd.js", "--minify", "--format=esm", "--outfile="+out, "--log-level=warning").CombinedOutput(); err != nil {
		t.Fatalf("esbuild: %v\n%s", err, b)
	}
	min, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	_, _ = w.Write(min)
	_ = w.Close()
	t.Logf("pushd.js: %d bytes, minified %d bytes, gzipped %d bytes", len(mustRead(t, "pushd.js")), len(min), gz.Len())
	if len(min) > sizeBudget {
		t.Fatalf("pushd.js minified is %d bytes, over the budget of %d", len(min), sizeBudget)
	}
}

// TestJS_Suites runs test/*.test.js with Node.js's test runner against a
// region of two pushd processes around one redis-server (with a webhook
// for UP) and a pushd --dev process, one file after another.
func TestJS_Suites(t *testing.T) {
	ts := needTools(t)
	start := time.Now()
	dev := startDev(t, ts.pushd)
	reg := startRegion(t, ts.pushd)
	devInfo := dev.wait(t)
	t.Logf("region and dev region up in %s", time.Since(start).Round(time.Millisecond))

	files, _ := filepath.Glob(filepath.Join("test", "*.test.js"))
	if len(files) == 0 {
		t.Fatal("no test/*.test.js")
	}
	args := append([]string{"--test", "--test-reporter=spec", "--test-concurrency=1", "--test-timeout=60000"}, files...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ts.node, args...)
	env := map[string]string{
		"PUSHD_WS_URLS":       strings.Join(reg.wsURLs(), " "),
		"PUSHD_DISPATCH":      strings.Join(reg.httpBases(), " "),
		"PUSHD_NODE_IDS":      strings.Join(reg.ids(), " "),
		"PUSHD_PUSH_URL":      "http://" + reg.nodes[0].addr("push"),
		"PUSHD_ADMIN_URL":     "http://" + reg.nodes[0].addr("admin"),
		"PUSHD_ADMIN_TOKEN":   reg.adminToken,
		"PUSHD_APP":           reg.app.ID,
		"PUSHD_KEY_ID":        reg.app.KeyID,
		"PUSHD_SECRET_BASE64": reg.app.SecretBase64,
		"PUSHD_API_KEY":       reg.app.APIKey,
		"PUSHD_DEV_WS_URL":    devInfo.WSURL,
		"PUSHD_DEV_PUSH_URL":  devInfo.PushURL,
		"PUSHD_DEV_API_KEY":   devInfo.APIKey,
		"PUSHD_CHROMIUM":      ts.chromium,
	}
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	t.Logf("node %s (%s):\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("the JavaScript suites failed: %v (output above)", err)
	}
}

// TestJS_Throughput measures how many messages per second one headless
// Chromium tab takes and acks (test/throughput.js; docs/performance.md
// quotes it). It runs only when asked:
//
//	PUSHD_JS_BENCH=1 go test ./appliance/client/js -run TestJS_Throughput -v
func TestJS_Throughput(t *testing.T) {
	if os.Getenv("PUSHD_JS_BENCH") == "" {
		t.Skip("a measurement, not a check: set PUSHD_JS_BENCH=1 to run it")
	}
	ts := needTools(t)
	reg := startRegion(t, ts.pushd)
	cmd := exec.Command(ts.node, filepath.Join("test", "throughput.js"))
	cmd.Env = append(os.Environ(), "PUSHD_WS_URLS="+strings.Join(reg.wsURLs(), " "), "PUSHD_PUSH_URL=http://"+reg.nodes[0].addr("push"),
		"PUSHD_APP="+reg.app.ID, "PUSHD_KEY_ID="+reg.app.KeyID, "PUSHD_SECRET_BASE64="+reg.app.SecretBase64,
		"PUSHD_API_KEY="+reg.app.APIKey, "PUSHD_CHROMIUM="+ts.chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// --- pushd processes ---

// process is one pushd process; its stderr (the log) is shown when the
// test fails.
type process struct {
	name string
	cmd  *exec.Cmd
	logs *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startProcess(t *testing.T, name, bin, dir string, stdout io.Writer, args ...string) *process {
	t.Helper()
	p := &process{name: name, cmd: exec.Command(bin, args...), logs: &lockedBuffer{}}
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = stdout, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		if t.Failed() {
			t.Logf("log of %s:\n%s", p.name, p.logs)
		}
	})
	return p
}

type regionNode struct {
	id    string
	dir   string
	ports map[string]int
	proc  *process
}

func (n *regionNode) addr(name string) string { return fmt.Sprintf("127.0.0.1:%d", n.ports[name]) }

type appCreds struct {
	ID           string `json:"id"`
	KeyID        string `json:"key_id"`
	SecretBase64 string `json:"secret_base64"`
	APIKey       string `json:"api_key"`
}

type region struct {
	nodes      []*regionNode
	adminToken string
	app        appCreds
}

func (r *region) wsURLs() []string {
	var s []string
	for _, n := range r.nodes {
		s = append(s, "ws://"+n.addr("ws")+"/v1/ws")
	}
	return s
}

func (r *region) httpBases() []string {
	var s []string
	for _, n := range r.nodes {
		s = append(s, "http://"+n.addr("ws"))
	}
	return s
}

func (r *region) ids() []string {
	var s []string
	for _, n := range r.nodes {
		s = append(s, n.id)
	}
	return s
}

// startRegion runs two pushd nodes around one redis-server: heartbeats
// every 2 s (the SDK's PINGs show up quickly), no connect rate limit, and
// a webhook for the business "echo" that answers an UP with "echo:" and
// its payload. It creates the app the suites use.
func startRegion(t *testing.T, bin string) *region {
	t.Helper()
	srv := streamstest.StartRedis(t)
	redisURL := "redis://" + srv.Addr() + "/0"
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var up struct{ Payload []byte }
		if err := json.NewDecoder(r.Body).Decode(&up); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = w.Write(append([]byte("echo:"), up.Payload...))
	}))
	t.Cleanup(hook.Close)
	cfgPath := filepath.Join(t.TempDir(), "pushd.json")
	cfg, _ := json.Marshal(map[string]any{"upstreams": map[string]string{"echo": hook.URL}})
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}

	r := &region{}
	for i, ports := 0, freePorts(t, 10); i < 2; i++ {
		r.nodes = append(r.nodes, &regionNode{id: fmt.Sprintf("js-%d", i+1), dir: t.TempDir(),
			ports: map[string]int{"ws": ports[5*i], "tcp": ports[5*i+1], "push": ports[5*i+2], "admin": ports[5*i+3], "raft": ports[5*i+4]}})
	}
	start := func(n *regionNode, extra ...string) {
		args := append([]string{"--config", cfgPath, "--node-id", n.id, "--data-dir", n.dir, "--redis", redisURL,
			"--ws-addr", n.addr("ws"), "--tcp-addr", n.addr("tcp"), "--push-addr", n.addr("push"),
			"--admin-addr", n.addr("admin"), "--raft-addr", n.addr("raft"), "--connect-rate", "-1",
			"--heartbeat", "2s", "--log-level", "warn",
			// The suites speak plain HTTP to the APIs: TLS between nodes
			// is the security tests' concern.
			"--insecure-plaintext"}, extra...)
		n.proc = startProcess(t, n.id, bin, n.dir, io.Discard, args...)
	}
	start(r.nodes[0], "--bootstrap")
	poll.Until(t, 30*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(r.nodes[0].dir, "admin-token"))
		r.adminToken = strings.TrimSpace(string(b))
		return err
	})
	start(r.nodes[1], "--join", r.nodes[0].addr("admin"), "--join-token", r.adminToken)

	// Both nodes take devices, and both dispatch endpoints know it.
	poll.Until(t, 30*time.Second, func() error {
		for _, n := range r.nodes {
			seen := map[string]bool{}
			for i := 0; i < 40; i++ {
				var a struct{ Node string }
				if err := getJSON(fmt.Sprintf("http://%s/v1/dispatch?app=probe&device=probe-%d", n.addr("ws"), i), &a); err != nil {
					return err
				}
				seen[a.Node] = true
			}
			if len(seen) != len(r.nodes) {
				return fmt.Errorf("dispatch on %s names %d nodes", n.id, len(seen))
			}
		}
		return nil
	})

	code, raw := call(http.MethodPost, "http://"+r.nodes[0].addr("admin")+"/v1/admin/apps", r.adminToken, map[string]any{"id": "js"})
	if code != http.StatusOK {
		t.Fatalf("create app: HTTP %d %s", code, raw)
	}
	if err := json.Unmarshal(raw, &r.app); err != nil {
		t.Fatal(err)
	}
	r.app.ID = "js"
	// Every node knows the app and its key before the suites start.
	poll.Until(t, 10*time.Second, func() error {
		for _, n := range r.nodes {
			code, raw := call(http.MethodPost, "http://"+n.addr("push")+"/v1/push", r.app.APIKey,
				map[string]any{"app": "js", "devices": []string{"probe"}, "data": "probe", "ttl": 1})
			if code != http.StatusOK {
				return fmt.Errorf("push through %s: HTTP %d %s", n.id, code, raw)
			}
		}
		return nil
	})
	return r
}

// devRegion is a pushd --dev process in its own directory.
type devRegion struct {
	dir  string
	proc *process
}

type devInfo struct {
	WSURL   string `json:"ws_url"`
	PushURL string `json:"push_url"`
	APIKey  string `json:"api_key"`
}

// startDev starts pushd --dev on free loopback ports; wait returns its
// pushctl.json once it is written.
func startDev(t *testing.T, bin string) *devRegion {
	t.Helper()
	d := &devRegion{dir: t.TempDir()}
	d.proc = startProcess(t, "pushd --dev", bin, d.dir, io.Discard, "--dev", "--log-level", "warn",
		"--ws-addr", "127.0.0.1:0", "--tcp-addr", "127.0.0.1:0", "--push-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0")
	return d
}

func (d *devRegion) wait(t *testing.T) devInfo {
	t.Helper()
	var info devInfo
	poll.Until(t, 30*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(d.dir, "pushd-dev", "pushctl.json"))
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &info)
	})
	// Ready: the push API takes the dev app's key.
	poll.Until(t, 10*time.Second, func() error {
		code, raw := call(http.MethodPost, info.PushURL+"/v1/push", info.APIKey,
			map[string]any{"app": "dev", "devices": []string{"probe"}, "data": "probe", "ttl": 1})
		if code != http.StatusOK {
			return fmt.Errorf("dev push: HTTP %d %s", code, raw)
		}
		return nil
	})
	return info
}

func freePorts(t *testing.T, k int) []int {
	t.Helper()
	ports, err := freeport.Take(k)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// call sends body as JSON with a bearer token; a request that fails has
// status 0 and the error as its body.
func call(method, url, token string, body any) (int, []byte) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func getJSON(url string, v any) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
