package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/streams/streamstest"
)

// checkConfig runs pushd --check-config with args and returns its exit
// status, stdout and stderr.
func checkConfig(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := runCLI(append(append([]string{"pushd"}, args...), "--check-config"), &out, &errOut)
	return code, out.String(), errOut.String()
}

// --redis takes the three topologies, and the durability flags say what a
// stored push waits for; --check-config prints it without the password.
func TestCheckConfig_RedisTopologies(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--redis", "redis://:secret@10.0.0.5:6379/0"},
			"redis single 10.0.0.5:6379 db 0, durability strict\n"},
		{[]string{"--redis", "redis-sentinel://10.0.0.1,10.0.0.2,10.0.0.3/pushd"},
			"redis sentinel master pushd db 0 via 10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379, durability strict (each push waits for 1 replica(s), up to 500ms)\n"},
		{[]string{"--redis", "redis-cluster://10.0.0.1:7000,10.0.0.2:7000", "--redis-wait-timeout", "200ms"},
			"redis cluster seeds 10.0.0.1:7000,10.0.0.2:7000, durability strict (each push waits for 1 replica(s), up to 200ms)\n"},
		{[]string{"--redis", "redis-cluster://10.0.0.1:7000", "--redis-wait-replicas", "0"},
			"redis cluster seeds 10.0.0.1:7000, durability strict\n"},
		{[]string{"--redis", "redis-sentinel://10.0.0.1/pushd", "--durability", "fast"},
			"redis sentinel master pushd db 0 via 10.0.0.1:26379, durability fast\n"},
		{[]string{"--redis", "redis://10.0.0.5:6379/0", "--redis-wait-replicas", "1"},
			"redis single 10.0.0.5:6379 db 0, durability strict (each push waits for 1 replica(s), up to 500ms)\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := checkConfig(tc.args...)
			if code != 0 || !strings.HasSuffix(out, tc.want) {
				t.Fatalf("exit %d, stdout %q, want it to end %q; stderr %q", code, out, tc.want, errOut)
			}
			if strings.Contains(out, "secret") {
				t.Fatalf("stdout shows the password: %q", out)
			}
		})
	}
	// The config file's keys are the flag names.
	dir := t.TempDir()
	p := filepath.Join(dir, "c.json")
	if err := os.WriteFile(p, []byte(`{"redis": "redis-sentinel://h1,h2/m", "durability": "strict", "redis-wait-replicas": 2, "redis-wait-timeout": "1s"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := checkConfig("--config", p)
	if want := "durability strict (each push waits for 2 replica(s), up to 1s)\n"; code != 0 || !strings.HasSuffix(out, want) {
		t.Fatalf("from a file: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestCheckConfig_RefusesRedisMistakes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--redis", "redis-sentinel://:secret@h1,h2"}, "no master name"},
		{[]string{"--redis", "redis-sentinel://:secret@h1:99999/m"}, "not 1-65535"},
		{[]string{"--redis", "redis-cluster://:secret@h1/3"}, "a cluster URL has none"},
		{[]string{"--redis", "http://:secret@h1"}, "unknown scheme"},
		{[]string{"--redis", "redis://:secret@h1/0?nope=1"}, "unexpected option: nope"},
		{[]string{"--durability", "eventually"}, `--durability "eventually": want strict or fast`},
		{[]string{"--durability", "fast", "--redis-wait-replicas", "1"}, "fast mode waits for no replica"},
		{[]string{"--redis-wait-replicas", "-1"}, "must be 0 or more"},
		{[]string{"--redis-wait-timeout", "5s"}, "must be 10ms..1s"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, errOut := checkConfig(tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errOut, tc.want)
			}
			if strings.Contains(errOut, "secret") {
				t.Fatalf("stderr shows the password: %q", errOut)
			}
		})
	}
}

// start runs pushd (not --check-config) with args against a fresh data
// dir and returns its exit status, stderr and the data dir.
func start(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	var out, errOut bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- runCLI(append([]string{"pushd", "--data-dir", dir, "--node-id", "n1", "--log-level", "error"}, args...), &out, &errOut)
	}()
	select {
	case code := <-done:
		return code, errOut.String(), dir
	case <-time.After(30 * time.Second):
		t.Fatal("pushd still runs after 30 s; it should have refused to start")
		return 0, "", ""
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A Sentinel set no one answers for stops the start with what go-redis
// said, before the node touches its data dir (no Raft, no region).
func TestStart_UnreachableSentinelsChangeNothing(t *testing.T) {
	url := fmt.Sprintf("redis-sentinel://%s,%s,%s/pushd", closedPort(t), closedPort(t), closedPort(t))
	code, errOut, dir := start(t, "--redis", url)
	if code != 1 || !strings.Contains(errOut, "cannot reach Redis: no Sentinel answered") || !strings.Contains(errOut, "connection refused") {
		t.Fatalf("exit %d, stderr %q; want 1 and why", code, errOut)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("data dir %s exists after a refused start: %v", dir, err)
	}
}

// Strict durability against a Redis that fsyncs every second is a
// configuration mistake (exit 2: systemd does not retry it).
func TestStart_StrictNeedsAppendfsyncAlways(t *testing.T) {
	srv := streamstest.StartRedis(t, streamstest.AppendFsync("everysec"))
	code, errOut, dir := start(t, "--redis", srv.URL())
	if code != 2 || !strings.Contains(errOut, "--durability strict needs appendfsync always") || !strings.Contains(errOut, srv.Addr()+" has everysec") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("data dir %s exists after a refused start: %v", dir, err)
	}
}

// A single-server URL naming a replica is refused: every push would fail.
func TestStart_RedisNamesAReplica(t *testing.T) {
	replica := streamstest.StartReplica(t, streamstest.StartRedis(t))
	code, errOut, _ := start(t, "--redis", replica.URL())
	if code != 1 || !strings.Contains(errOut, replica.Addr()+" is a replica") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}
