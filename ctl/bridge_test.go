package ctl

import (
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/appliance/bridge"
	"github.com/pushd/pushd/ctl/load"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta"
)

// startBridgedRegions starts regions bj and sh of one node each with the
// test app, bridged through an in-process Kafka (kfake).
func startBridgedRegions(t *testing.T) (bj, sh *testRegion) {
	t.Helper()
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kafka.Close)
	app := raftmeta.App{ID: testApp, Secrets: []raftmeta.Secret{{KeyID: testKeyID, Secret: testSecret}},
		APIKeys: []raftmeta.APIKey{{ID: "key-1", Hash: raftmeta.HashKey(testAPIKey)}}}
	start := func(name, peer string) *testRegion {
		return startTestRegionWith(t, 1, appliancetest.RegionOptions{
			Commands: []raftmeta.Command{raftmeta.CreateApp(app)},
			Config:   func(_ int, cfg *appliance.Config) { cfg.Region = name },
			Bridge: func(_ int, node *appliance.Node) (*bridge.Bridge, error) {
				return bridge.New(node, bridge.Config{Brokers: kafka.ListenAddrs(), Peers: []string{peer}}, nil)
			},
		})
	}
	return start("bj", "sh"), start("sh", "bj")
}

// TestPush_Region pushes through bj to a device listening in sh: the
// answer says queued for sh and lists no device of bj; --region all
// pushes to both; a failed region makes push exit 1.
func TestPush_Region(t *testing.T) {
	t.Parallel()
	bj, sh := startBridgedRegions(t)
	connectDevice(t, sh.Nodes[0], "phone-1")
	h := harness{env: testEnv(bj.Nodes[0].PushURL)}
	r := h.run(t, "push", "--device", "phone-1", "--region", "sh", "--data", "hello from bj").expect(t, exitOK)
	if _, rest := cutID(t, r.stdout); rest != "BRIDGED: sh queued\n" {
		t.Fatalf("stdout:\n%s", r.stdout)
	}
	poll.Until(t, 10*time.Second, func() error {
		st, err := sh.Nodes[0].DeviceState(t.Context(), testApp, "phone-1")
		if err != nil || st.Last != 1 {
			return fmt.Errorf("phone-1 in sh: %+v, %v", st, err)
		}
		return nil
	})

	out := decodeJSON[pushOutput](t, h.run(t, "push", "--device", "phone-1", "--region", "all", "--data", "x", "--json").expect(t, exitOK))
	if !out.Stored || len(out.Results) != 1 || out.Bridged["sh"] != api.BridgedQueued {
		t.Fatalf("--region all: %+v", out)
	}
	r = h.run(t, "push", "--device", "phone-1", "--region", "bj", "--region", "sh", "--data", "x").expect(t, exitOK)
	if _, rest := cutID(t, r.stdout); !regexp.MustCompile(`^BRIDGED: sh queued\nDEVICE\s+STATUS\s+SEQ\s+REASON\nphone-1\s+stored\s+2\s+-\n$`).MatchString(rest) {
		t.Fatalf("--region bj --region sh:\n%s", r.stdout)
	}

	// A bridge that is closing fails every export.
	if err := bj.Nodes[0].Bridge.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	r = h.run(t, "push", "--device", "phone-1", "--region", "sh", "--data", "x").expect(t, exitFailure)
	if err := contains(r.stderr, "not on its way to region sh (failed)"); err != nil {
		t.Fatalf("%v\nstdout %s", err, r.stdout)
	}
	if err := contains(r.stdout, "BRIDGED: sh failed\n"); err != nil {
		t.Fatal(err)
	}
}

func TestPush_RegionUsageErrors(t *testing.T) {
	t.Parallel()
	h := tripwire(t)
	for _, args := range [][]string{
		{"push", "--device", "d", "--data", "x", "--region", "all", "--region", "sh"},
		{"push", "--device", "d", "--data", "x", "--region", "sh", "--wait-ack"},
	} {
		h.run(t, args...).expect(t, exitUsage)
	}
}

// TestBridgeStatus_Tables asks both regions for their bridge after a push
// from bj to sh, and a region without a bridge.
func TestBridgeStatus_Tables(t *testing.T) {
	t.Parallel()
	bj, sh := startBridgedRegions(t)
	connectDevice(t, sh.Nodes[0], "phone-1")
	harness{env: testEnv(bj.Nodes[0].PushURL)}.run(t, "push", "--device", "phone-1", "--region", "sh", "--data", "x").expect(t, exitOK)
	poll.Until(t, 10*time.Second, func() error {
		st := sh.Nodes[0].Bridge.Status()
		if len(st.Partitions) == 0 || st.From[0].Imported != 1 || st.From[0].LastOffset < 0 {
			return fmt.Errorf("sh's bridge: %+v", st)
		}
		return nil
	})

	out := bj.as(0, bj.Viewer).run(t, "bridge", "status").expect(t, exitOK).stdout
	blocks := strings.Split(out, "\n\n")
	if len(blocks) != 4 {
		t.Fatalf("%d blocks, want 4:\n%s", len(blocks), out)
	}
	kv := kvRows(blocks[0])
	if kv["REGION"] != "bj" || kv["PEERS"] != "sh" || kv["TOPIC"] != "pushd-bridge.bj" || kv["GROUP"] != "pushd-bridge.bj" {
		t.Fatalf("header block %v:\n%s", kv, out)
	}
	to := tableRows(blocks[1])
	if strings.Join(to[0], " ") != "TO BUFFERED QUEUED FAILED PRODUCED PRODUCE_ERRORS" || strings.Join(to[1], " ") != "sh 0 1 0 1 0" {
		t.Fatalf("TO table:\n%s", blocks[1])
	}
	nodes := tableRows(blocks[3])
	if strings.Join(nodes[0], " ") != "NODE ALIVE BUFFER BUFFER_BYTES PARTITIONS ERRORS LAST_ERROR" ||
		nodes[1][0] != bj.Nodes[0].ID() || nodes[1][1] != "true" || nodes[1][2] != "0/10000" || nodes[1][5] != "0" {
		t.Fatalf("NODES table:\n%s", blocks[3])
	}

	out = sh.as(0, sh.Viewer).run(t, "bridge", "status").expect(t, exitOK).stdout
	from := tableRows(strings.Split(out, "\n\n")[2])
	if strings.Join(from[0], " ") != "FROM TOPIC LAG LAST_OFFSET CONSUMED IMPORTED SKIPPED DROPPED INVALID" ||
		!regexp.MustCompile(`^bj pushd-bridge.bj 0 \d+ 1 1 0 0 0$`).MatchString(strings.Join(from[1], " ")) {
		t.Fatalf("FROM table:\n%s", out)
	}
	st := decodeJSON[api.BridgeRegion](t, sh.as(0, sh.Viewer).run(t, "bridge", "status", "-o", "json").expect(t, exitOK))
	if st.Region != "sh" || len(st.Nodes) != 1 || st.Nodes[0].Bridge == nil || len(st.Nodes[0].Bridge.Partitions) != 2 {
		t.Fatalf("JSON %+v", st)
	}

	alone := startTestRegion(t, 1)
	out = alone.as(0, alone.Viewer).run(t, "bridge", "status").expect(t, exitOK).stdout
	if !strings.Contains(out, "BRIDGE  none") || !strings.Contains(out, "REGION  default") {
		t.Fatalf("a region without a bridge:\n%s", out)
	}
}

// toConfig writes the pushctl.json of region r (node 0) as pushd --dev
// writes it, for bench bridge --to.
func toConfig(t *testing.T, r *testRegion, name string) string {
	t.Helper()
	n := r.Nodes[0]
	cfg := fileConfig{PushURL: n.PushURL, TCPURL: n.TCPURL, WSURL: n.WSURL, App: testApp, KeyID: testKeyID,
		SecretBase64: base64.StdEncoding.EncodeToString(testSecret), APIKey: testAPIKey, Region: name}
	return writeConfig(t, cfg)
}

// TestBenchBridge_AgainstTwoRegions pushes through bj to SDK devices held
// in sh by in-process workers: every push is received once and acked in
// sh.
func TestBenchBridge_AgainstTwoRegions(t *testing.T) {
	t.Parallel()
	bj, sh := startBridgedRegions(t)
	transport := transportOf(sh.Nodes[0].DeviceURL())
	r := harness{env: testEnv(bj.Nodes[0].PushURL)}.run(t, "bench", "bridge", "--to", toConfig(t, sh, "sh"), "--transport", transport,
		"--devices", "20", "--pushes", "200", "--batch", "10", "--concurrency", "4", "--workers", "2", "--wait", "15s", "--json").expect(t, exitOK)
	rep := decodeJSON[load.PushReport](t, r)
	if rep.Scenario != "bridge" || rep.Region != "sh" || rep.Mode != "online" || rep.Devices != 20 || rep.Workers != 2 || rep.Transport != transport {
		t.Fatalf("report %+v", rep)
	}
	if rep.Requested != 200 || rep.Pushes != 200 || rep.Received != 200 || rep.Lost+rep.Duplicates+rep.Errors+rep.Unacked != 0 {
		t.Fatalf("accounting %+v\nstderr:\n%s", rep, r.stderr)
	}
	if rep.PushesPerS <= 0 || rep.LatencyMS.P50 <= 0 || rep.LatencyMS.Max < rep.LatencyMS.P99 {
		t.Fatalf("rates %+v", rep)
	}
	// A region the origin's bridge does not know: every push refused.
	r = harness{env: testEnv(bj.Nodes[0].PushURL)}.run(t, "bench", "bridge", "--to", toConfig(t, sh, "sh"), "--region", "gz",
		"--transport", transport, "--devices", "2", "--pushes", "4", "--batch", "2", "--wait", "1s", "--json").expect(t, exitFailure)
	if rep := decodeJSON[load.PushReport](t, r); rep.Errors != 4 || rep.FailedRequests != 2 {
		t.Fatalf("pushes for an unknown region: %+v", rep)
	}
}

func TestBenchBridge_UsageErrors(t *testing.T) {
	t.Parallel()
	other := writeConfig(t, fileConfig{PushURL: "http://127.0.0.1:1", WSURL: "ws://127.0.0.1:1/v1/ws", App: "other", KeyID: testKeyID,
		SecretBase64: base64.StdEncoding.EncodeToString(testSecret), APIKey: testAPIKey, Region: "sh"})
	noRegion := writeConfig(t, fileConfig{PushURL: "http://127.0.0.1:1", WSURL: "ws://127.0.0.1:1/v1/ws", App: testApp, KeyID: testKeyID,
		SecretBase64: base64.StdEncoding.EncodeToString(testSecret), APIKey: testAPIKey})
	h := harness{env: testEnv("http://127.0.0.1:1")}
	for name, args := range map[string][]string{
		"neither --to nor --local": {},
		"both":                     {"--to", other, "--local"},
		"transport":                {"--to", other, "--transport", "udp"},
		"another app":              {"--to", other},
		"no region":                {"--to", noRegion},
		"no such file":             {"--to", "/nonexistent/pushctl.json"},
		"devices":                  {"--to", noRegion, "--region", "sh", "--devices", "0"},
	} {
		r := h.run(t, append([]string{"bench", "bridge"}, args...)...)
		if r.code != exitUsage {
			t.Errorf("%s: exit %d, stderr %q", name, r.code, r.stderr)
		}
	}
}
