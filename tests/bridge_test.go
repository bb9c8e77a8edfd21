package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams/streamstest"
)

// startBridgedRegion runs region name as one pushd process around its own
// redis-server, bridged through brokers to peers, and returns the node
// and its admin token.
func startBridgedRegion(t *testing.T, name string, brokers []string, peers ...string) (*node, string) {
	t.Helper()
	srv := streamstest.StartRedis(t)
	n := newNode(t, name+"-1")
	n.flags = []string{"--region", name, "--bridge-brokers", strings.Join(brokers, ","), "--bridge-peers", strings.Join(peers, ",")}
	n.start(t, "redis://"+srv.Addr()+"/0", "--bootstrap")
	var tok string
	poll.Until(t, 30*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(n.dir, "admin-token"))
		tok = strings.TrimSpace(string(b))
		return err
	})
	poll.Until(t, 30*time.Second, func() error {
		resp, err := http.Get("http://" + n.addr("ws") + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: healthz %d", n.id, resp.StatusCode)
		}
		return nil
	})
	return n, tok
}

// bridgePush pushes payload to devices through n for regions, with the
// app's API key, and fails the test unless the answer says queued for
// every other region named.
func bridgePush(t *testing.T, n *node, app appCreds, devices []string, payload string, regions ...string) {
	t.Helper()
	code, raw := pushAs(t, n, app.APIKey, map[string]any{"app": app.ID, "devices": devices, "data": payload, "regions": regions})
	var ans struct{ Bridged map[string]string }
	if code != http.StatusOK || json.Unmarshal(raw, &ans) != nil {
		t.Fatalf("push %s through %s: HTTP %d %s", payload, n.id, code, raw)
	}
	for _, r := range regions {
		if !strings.HasPrefix(n.id, r+"-") && ans.Bridged[r] != "queued" {
			t.Fatalf("push %s: region %s %q", payload, r, ans.Bridged[r])
		}
	}
}

// metricValue reads one sample of n's /metrics: name with labels exactly
// as Prometheus prints them; 0 when absent.
func metricValue(t *testing.T, n *node, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.addr("ws") + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// TestBridge_ConsumerKilledBeforeCommitting is the fault of issue 11 with
// processes: Kafka (kfake, in the test) refuses every offset commit of
// sh's consumer group while bj pushes 30 messages to 5 devices connected
// in sh, so sh stores and delivers them without committing; then sh's
// pushd is killed with SIGKILL and started again. It reads those records
// again, imports them again — every inbox already has them — and the
// devices, reconnected, have each message exactly once, in order, as do
// they for the pushes after.
func TestBridge_ConsumerKilledBeforeCommitting(t *testing.T) {
	t.Parallel()
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	brokers := kafka.ListenAddrs()
	bj, bjTok := startBridgedRegion(t, "bj", brokers, "sh")
	sh, shTok := startBridgedRegion(t, "sh", brokers, "bj")
	bjApp, shApp := createApp(t, bj, bjTok, "news"), createApp(t, sh, shTok, "news")
	devices := startFleet(t, shApp, []*node{sh}, "phone", 5)
	devices.waitConnected(t, 30*time.Second)
	ids := devices.ids()
	var want []string
	push := func(payload string) {
		bridgePush(t, bj, bjApp, ids, payload, "sh")
		want = append(want, payload)
	}
	delivered := func(timeout time.Duration) {
		t.Helper()
		poll.Until(t, timeout, func() error {
			for _, d := range devices.devices {
				d.mu.Lock()
				got := slices.Clone(d.got)
				d.mu.Unlock()
				if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
					return fmt.Errorf("%s: the app saw %s, pushed were %s (a duplicate or out of order)", d.id, tail(got), tail(want))
				}
				if len(got) < len(want) {
					return fmt.Errorf("%s: %d of %d delivered", d.id, len(got), len(want))
				}
			}
			return nil
		})
	}
	push("warm")
	delivered(30 * time.Second)

	refused := kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: "pushd-bridge.sh", Err: kerr.UnknownServerError, Count: -1})
	for i := range 30 {
		push(fmt.Sprint("m-", i))
	}
	delivered(30 * time.Second)
	if refused.Hits() == 0 {
		t.Fatal("sh committed nothing while the test refused: the fault was not exercised")
	}
	sh.kill()
	refused.Remove()
	sh.start(t, sh.redisURL(t), "--bootstrap")
	poll.Until(t, 60*time.Second, func() error {
		if n := metricValue(t, sh, `pushd_bridge_consumed_records_total{outcome="repeat",topic="pushd-bridge.bj"}`); n == 0 {
			return fmt.Errorf("the restarted sh read nothing again yet")
		}
		return nil
	})
	for i := range 10 {
		push(fmt.Sprint("after-", i))
	}
	delivered(60 * time.Second)
	devices.check(t)
}

// redisURL is the --redis flag n was last started with.
func (n *node) redisURL(t *testing.T) string {
	t.Helper()
	for i, a := range n.cmd.Args {
		if a == "--redis" {
			return n.cmd.Args[i+1]
		}
	}
	t.Fatalf("%s was started without --redis", n.id)
	return ""
}

// startDevRegionAt runs the README's `pushd --dev --region … --data-dir
// dataDir …` in dir, on free loopback ports, and waits for its
// pushctl.json and banner.
func startDevRegionAt(t *testing.T, dir, dataDir string, args ...string) *devRegion {
	t.Helper()
	r := &devRegion{dir: dir, out: &logBuffer{}, logs: &logBuffer{}}
	r.cmd = exec.Command(filepath.Join(bin, "pushd"), append([]string{"--dev", "--data-dir", dataDir,
		"--ws-addr", "127.0.0.1:0", "--tcp-addr", "127.0.0.1:0", "--push-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"}, args...)...)
	r.cmd.Dir = dir
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			_ = r.cmd.Process.Signal(syscall.SIGTERM)
			_ = r.cmd.Wait()
		}
		failOnRace(t, dataDir, r.logs)
		if t.Failed() {
			t.Logf("log of %s:\n%s", dataDir, r.logs.String())
		}
	})
	poll.Until(t, 30*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(dir, dataDir, "pushctl.json"))
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &r.info)
	})
	poll.Until(t, 10*time.Second, func() error {
		if !strings.Contains(r.out.String(), "pushctl settings") {
			return fmt.Errorf("no banner on stdout yet: %q", r.out)
		}
		return nil
	})
	return r
}

// pushctlOKIn runs pushctl in dir and returns its stdout; any exit
// other than 0 fails the test.
func pushctlOKIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	code, stdout, stderr := pushctlIn(t, dir, nil, args...)
	if code != 0 {
		t.Fatalf("pushctl %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// TestWalkthrough_TwoRegions is the README's two regions on one laptop:
// bj with the embedded Kafka, sh bridged to it, each with its own dev
// Redis; a device listening in sh gets a push made in bj once, and so it
// does a push for every region; bridge status shows it in both regions.
func TestWalkthrough_TwoRegions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kafkaAddr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	bj := startDevRegionAt(t, dir, "pushd-bj", "--region", "bj", "--dev-kafka", kafkaAddr, "--bridge-peers", "sh")
	if got := bj.banner(t, "embedded Kafka"); !strings.HasPrefix(got, kafkaAddr) {
		t.Fatalf("banner says embedded Kafka %q, want %s", got, kafkaAddr)
	}
	sh := startDevRegionAt(t, dir, "pushd-sh", "--region", "sh", "--bridge-brokers", kafkaAddr, "--bridge-peers", "bj")
	if bj.info.RedisURL == sh.info.RedisURL {
		t.Fatalf("both regions on one Redis: %s", bj.info.RedisURL)
	}
	bjConf, shConf := "--config=pushd-bj/pushctl.json", "--config=pushd-sh/pushctl.json"

	cmd := exec.Command(filepath.Join(bin, "pushctl"), shConf, "listen", "--device", "phone-1", "-o", "json")
	cmd.Dir = dir
	l := startListener(t, cmd)
	l.next(t, "WELCOME")

	out := pushctlOKIn(t, dir, bjConf, "push", "--device", "phone-1", "--region", "sh", "--data", "hello from Beijing")
	if !regexp.MustCompile(`^ID: [0-9a-f]{32}\nBRIDGED: sh queued\n$`).MatchString(out) {
		t.Fatalf("push --region sh printed:\n%s", out)
	}
	if p := l.next(t, "PUSH"); p["payload"] != "hello from Beijing" {
		t.Fatalf("listen in sh printed %v", p)
	}
	// For every region: stored in bj (phone-1 is not connected there),
	// delivered in sh.
	out = pushctlOKIn(t, dir, bjConf, "push", "--device", "phone-1", "--region", "all", "--data", "to all")
	if !regexp.MustCompile(`(?m)^BRIDGED: sh queued\n(?s:.*)^phone-1\s+stored\s+1\s`).MatchString(out) {
		t.Fatalf("push --region all printed:\n%s", out)
	}
	if p := l.next(t, "PUSH"); p["payload"] != "to all" {
		t.Fatalf("listen in sh printed %v", p)
	}

	out = pushctlOKIn(t, dir, bjConf, "bridge", "status")
	if !regexp.MustCompile(`(?m)^REGION\s+bj$`).MatchString(out) || !regexp.MustCompile(`(?m)^sh\s+0\s+2\s+0\s+2\s+0$`).MatchString(out) {
		t.Fatalf("bridge status in bj:\n%s", out)
	}
	poll.Until(t, 10*time.Second, func() error {
		out = pushctlOKIn(t, dir, shConf, "bridge", "status")
		if !regexp.MustCompile(`(?m)^bj\s+pushd-bridge\.bj\s+0\s+\d+\s+2\s+2\s+0\s+0\s+0$`).MatchString(out) {
			return fmt.Errorf("bridge status in sh:\n%s", out)
		}
		return nil
	})
	if out = pushctlOKIn(t, dir, shConf, "status"); !regexp.MustCompile(`(?m)^REGION\s+sh$`).MatchString(out) {
		t.Fatalf("status in sh:\n%s", out)
	}
}
