package tests

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/freeport"

	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams/streamstest"
)

// node is one pushd process of a region.
type node struct {
	id, dir string
	ports   map[string]int
	// flags are passed on every start, restarts included.
	flags []string
	// env is added to the process's environment on every start.
	env  []string
	cmd  *exec.Cmd
	logs *logBuffer
	// down is set before the process is killed, for goroutines that pick
	// a live node while the test kills one.
	down atomic.Bool
}

func (n *node) addr(name string) string { return fmt.Sprintf("127.0.0.1:%d", n.ports[name]) }

// freePorts reserves distinct loopback ports: a Raft address must stay the
// same across a restart, so the test picks ports up front.
func freePorts(t *testing.T, k int) []int {
	t.Helper()
	ports, err := freeport.Take(k)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

func newNode(t *testing.T, id string) *node {
	p := freePorts(t, 5)
	return &node{id: id, dir: t.TempDir(), logs: &logBuffer{},
		ports: map[string]int{"ws": p[0], "tcp": p[1], "push": p[2], "admin": p[3], "raft": p[4]}}
}

// start runs the node with extra flags (--bootstrap or --join ...).
func (n *node) start(t *testing.T, redisURL string, extra ...string) {
	t.Helper()
	args := append([]string{"--node-id", n.id, "--data-dir", n.dir, "--redis", redisURL,
		"--ws-addr", n.addr("ws"), "--tcp-addr", n.addr("tcp"), "--push-addr", n.addr("push"),
		"--admin-addr", n.addr("admin"), "--raft-addr", n.addr("raft"), "--connect-rate", "-1"}, n.flags...)
	args = append(args, extra...)
	failOnRace(t, n.id, n.logs)
	n.logs.Reset()
	n.down.Store(false)
	n.cmd = exec.Command(filepath.Join(bin, "pushd"), args...)
	n.cmd.Env = append(os.Environ(), n.env...)
	n.cmd.Stdout, n.cmd.Stderr = io.Discard, n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.kill()
		failOnRace(t, n.id, n.logs)
		if t.Failed() {
			t.Logf("log of %s:\n%s", n.id, n.logs.String())
		}
	})
}

// failOnRace fails the test when a process's log holds a data race
// report (pushd is built with -race when the tests are).
func failOnRace(t *testing.T, who string, logs *logBuffer) {
	t.Helper()
	if out := logs.String(); strings.Contains(out, "WARNING: DATA RACE") {
		i := strings.Index(out, "WARNING: DATA RACE")
		t.Errorf("%s reported a data race:\n%s", who, out[i:min(len(out), i+4000)])
	}
}

func (n *node) kill() { n.stop(syscall.SIGKILL) }

// stop ends the process with sig (SIGKILL, or SIGTERM for a graceful
// shutdown) and waits for it to exit.
func (n *node) stop(sig syscall.Signal) {
	n.down.Store(true)
	if n.cmd != nil && n.cmd.ProcessState == nil {
		_ = n.cmd.Process.Signal(sig)
		_ = n.cmd.Wait()
	}
}

// signal sends sig (SIGSTOP, SIGCONT) to the running process.
func (n *node) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%v to %s: %v", sig, n.id, err)
	}
}

// caFile is the region CA's certificate as n keeps it: what pushctl and
// the tests trust to reach its admin API.
func (n *node) caFile() string { return filepath.Join(n.dir, "tls", "ca.crt") }

// plaintext reports whether n runs without the region's TLS.
func (n *node) plaintext() bool { return slices.Contains(n.flags, "--insecure-plaintext") }

// adminURL is n's admin API: https, unless the node runs plaintext.
func (n *node) adminURL() string {
	if n.plaintext() {
		return "http://" + n.addr("admin")
	}
	return "https://" + n.addr("admin")
}

// adminClient trusts n's region CA, as pushctl with --ca-file does.
func adminClient(t *testing.T, n *node) *http.Client {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	if n.plaintext() {
		return hc
	}
	b, err := os.ReadFile(n.caFile())
	if err != nil {
		t.Fatalf("the region CA of %s: %v", n.id, err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	return hc
}

// admin calls a node's admin API, over HTTPS trusting the region CA.
func admin(t *testing.T, n *node, method, path, token string, body any) (int, []byte) {
	t.Helper()
	return call(t, adminClient(t, n), method, n.adminURL()+path, token, body)
}

// pushAs posts a push request to n's push API with an app's API key.
func pushAs(t *testing.T, n *node, apiKey string, body map[string]any) (int, []byte) {
	t.Helper()
	return call(t, &http.Client{Timeout: 10 * time.Second}, http.MethodPost, "http://"+n.addr("push")+"/v1/push", apiKey, body)
}

// joinArgs are the flags of a node joining through first with token: the
// token in a file and the region CA's certificate first keeps.
func joinArgs(t *testing.T, first *node, token string) []string {
	t.Helper()
	tokFile := filepath.Join(t.TempDir(), "join-token")
	if err := os.WriteFile(tokFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--join", first.addr("admin"), "--join-token-file", tokFile}
	if !first.plaintext() {
		args = append(args, "--region-ca", first.caFile())
	}
	return args
}

// adminToken waits for the admin token a bootstrapping node writes.
func adminToken(t *testing.T, n *node) string {
	t.Helper()
	var token string
	poll.Until(t, 30*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(n.dir, "admin-token"))
		token = strings.TrimSpace(string(b))
		return err
	})
	return token
}

// call sends body as JSON with a bearer token and returns the answer's
// status and body; a request that fails has status 0 and the error as body.
func call(t *testing.T, hc *http.Client, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

type regionStatus struct {
	Leader string
	Nodes  []struct {
		ID        string
		Alive     bool
		Voter     bool
		RaftState string `json:"raft_state"`
	}
}

func status(t *testing.T, n *node, token string) (regionStatus, error) {
	code, raw := admin(t, n, http.MethodGet, "/v1/admin/status", token, nil)
	var st regionStatus
	if code != http.StatusOK {
		return st, fmt.Errorf("status from %s: HTTP %d %s", n.id, code, raw)
	}
	return st, json.Unmarshal(raw, &st)
}

// TestRegion_ThreeProcesses forms a region of three pushd processes around
// one redis-server (one bootstraps, making the region's CA, two join with
// the admin token it printed and get their certificates with it), degrades
// it through a follower, kills the Raft leader with SIGKILL and measures
// how long admin writes are unavailable, then brings the killed node back
// and checks it catches up. Raft and the admin API run mutual TLS
// throughout, as outside --dev they do.
func TestRegion_ThreeProcesses(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs three pushd processes through a Raft election")
	}
	srv := streamstest.StartRedis(t)
	redisURL := "redis://" + srv.Addr() + "/0"
	nodes := []*node{newNode(t, "bj-1"), newNode(t, "bj-2"), newNode(t, "bj-3")}
	nodes[0].start(t, redisURL, "--bootstrap")
	token := adminToken(t, nodes[0])
	for _, n := range nodes[1:] {
		n.start(t, redisURL, joinArgs(t, nodes[0], token)...)
	}
	// The leader is taken from the same answer that shows the region whole:
	// a second status read can fall in an election on a busy machine.
	var leader, follower *node
	poll.Until(t, 30*time.Second, func() error {
		st, err := status(t, nodes[0], token)
		if err != nil {
			return err
		}
		alive, voters := 0, 0
		for _, s := range st.Nodes {
			if s.Alive {
				alive++
			}
			if s.Voter {
				voters++
			}
		}
		if alive != 3 || voters != 3 || st.Leader == "" {
			return fmt.Errorf("status: leader %q, %d alive, %d voters", st.Leader, alive, voters)
		}
		leader, follower = nil, nil
		for _, n := range nodes {
			if n.id == st.Leader {
				leader = n
			} else if follower == nil {
				follower = n
			}
		}
		if leader == nil {
			return fmt.Errorf("status names leader %q, not a node of this test", st.Leader)
		}
		return nil
	})
	code, raw := admin(t, follower, http.MethodPost, "/v1/admin/apps", token, map[string]any{"id": "drill"})
	if code != http.StatusOK {
		t.Fatalf("create app: HTTP %d %s", code, raw)
	}
	var app struct {
		APIKey string `json:"api_key"`
	}
	_ = json.Unmarshal(raw, &app)
	push := func(n *node, priority string) (int, []byte) {
		return pushAs(t, n, app.APIKey, map[string]any{"app": "drill", "devices": []string{"d1"}, "data": "x", "priority": priority})
	}
	poll.Until(t, 5*time.Second, func() error { // the app reaches every node
		for _, n := range nodes {
			if code, raw := push(n, "low"); code != http.StatusOK {
				return fmt.Errorf("%s: HTTP %d %s", n.id, code, raw)
			}
		}
		return nil
	})

	start := time.Now()
	code, raw = admin(t, follower, http.MethodPost, "/v1/admin/degrade", token, map[string]any{"priority": "low", "reason": "drill"})
	if code != http.StatusOK {
		t.Fatalf("degrade through follower %s: HTTP %d %s", follower.id, code, raw)
	}
	// Every node is asked in each round, so the second is counted from the
	// call for all three.
	poll.Until(t, time.Second-time.Since(start), func() error {
		for _, n := range nodes {
			if code, raw := push(n, "low"); code != http.StatusServiceUnavailable || !strings.Contains(string(raw), `"degraded"`) {
				return fmt.Errorf("%s still takes low-priority pushes: HTTP %d %s", n.id, code, raw)
			}
		}
		return nil
	})
	t.Logf("degrade enforced by all three push APIs %s after the admin call", time.Since(start).Round(time.Millisecond))
	for _, n := range nodes {
		if code, raw := push(n, "normal"); code != http.StatusOK {
			t.Fatalf("%s refused a normal-priority push while only low is shed: HTTP %d %s", n.id, code, raw)
		}
	}

	leader.kill()
	start = time.Now()
	for {
		code, raw := admin(t, follower, http.MethodPost, "/v1/admin/degrade/off", token, map[string]any{"reason": "failover drill"})
		if code == http.StatusOK {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("no write accepted 20 s after killing the leader: HTTP %d %s", code, raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("admin writes unavailable for %s after SIGKILL of the Raft leader %s (3 processes, default Raft timings)",
		time.Since(start).Round(time.Millisecond), leader.id)

	leader.start(t, redisURL)
	poll.Until(t, 30*time.Second, func() error {
		code, raw := admin(t, leader, http.MethodGet, "/v1/admin/degrade", token, nil)
		if code != http.StatusOK || !strings.Contains(string(raw), `"active":false`) {
			return fmt.Errorf("restarted %s: HTTP %d %s", leader.id, code, raw)
		}
		return nil
	})
}
