package ctl

import (
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
)

// pushRequests decodes the push requests pushctl sent through tp.
func pushRequests(t *testing.T, tp *tap) []api.PushRequest {
	t.Helper()
	var out []api.PushRequest
	for _, r := range tp.requests() {
		if r.path != "/v1/push" {
			continue
		}
		var req api.PushRequest
		if err := api.DecodeStrict(r.body, &req); err != nil {
			t.Fatalf("pushctl sent %q: %v", r.body, err)
		}
		out = append(out, req)
	}
	return out
}

// cutID splits push's table output into the message id and the rest.
func cutID(t *testing.T, stdout string) (string, string) {
	t.Helper()
	first, rest, _ := strings.Cut(stdout, "\n")
	id, ok := strings.CutPrefix(first, "ID: ")
	if !ok || !regexp.MustCompile(`^k?[0-9a-f]{31,32}$`).MatchString(id) {
		t.Fatalf("first line %q, want ID: and a message id", first)
	}
	return id, rest
}

func TestPush_TableShowsIDAndEachDevice(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	tp := newTap(t, node.PushURL, tapHooks{})
	connectDevice(t, node, "phone-1")
	h := harness{env: testEnv(tp.url())}
	args := []string{"push", "--device", "phone-1", "--device", "phone-2", "--data", "hello", "--business", "chat",
		"--priority", "high", "--ttl", "30s", "--idempotency-key", "k-1"}
	r := h.run(t, args...).expect(t, exitOK)
	id, rest := cutID(t, r.stdout)
	want := "DEVICE   STATUS     SEQ  REASON\n" +
		"phone-1  delivered  1    -\n" +
		"phone-2  stored     1    -\n"
	if rest != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", rest, want)
	}
	req := pushRequests(t, tp)[0]
	if *req.Data != "hello" || *req.Business != "chat" || *req.Priority != "high" || *req.TTL != 30 || *req.IdempotencyKey != "k-1" || *req.App != testApp {
		t.Fatalf("request %+v", req)
	}
	// The idempotency key names the message: sent again, it is the same
	// one, stored once.
	r = h.run(t, args...).expect(t, exitOK)
	if again, rest := cutID(t, r.stdout); again != id || !regexp.MustCompile(`(?m)^phone-2\s+stored,duplicate\s+1\s`).MatchString(rest) {
		t.Fatalf("the same push again:\n%s", r.stdout)
	}
}

// TestPush_JSONAndRejectedExit1: on a node without a store a device
// connected elsewhere cannot be reached (rejected, unavailable), and an
// invalid id is rejected on its own; either makes push exit 1.
func TestPush_JSONAndRejectedExit1(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	tp := newTap(t, node.PushURL, tapHooks{})
	connectDevice(t, node, "ok")
	r := harness{env: testEnv(tp.url())}.run(t, "push", "--device", "ok", "--device", "gone", "--device", "bad id",
		"--data", "", "--json").expect(t, exitFailure)
	out := decodeJSON[pushOutput](t, r)
	if out.ID == "" || out.Stored || len(out.Results) != 3 || out.Results[0].Status != api.StatusDelivered {
		t.Fatalf("%+v", out)
	}
	if out.Results[1].Status != api.StatusRejected || out.Results[1].Reason != "unavailable" || out.Results[2].Reason != "invalid_device" {
		t.Fatalf("results %+v", out.Results)
	}
	if err := contains(r.stderr, "2 of 3 devices rejected: gone (unavailable), bad id (invalid_device)"); err != nil {
		t.Error(err)
	}
	// An empty --data is a payload, not a missing one.
	if d := pushRequests(t, tp)[0].Data; d == nil || *d != "" {
		t.Fatalf("data %v", d)
	}
}

func TestPush_GroupAndBroadcastPrintRecipients(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	tp := newTap(t, node.PushURL, tapHooks{})
	for _, d := range []string{"a", "b", "c"} {
		connectDevice(t, node, d, "room-1")
	}
	connectDevice(t, node, "d")
	h := harness{env: testEnv(tp.url())}
	r := h.run(t, "push", "--group", "room-1", "--data", "x").expect(t, exitOK)
	if _, rest := cutID(t, r.stdout); rest != "RECIPIENTS: 3\nOTHER_NODES: 0\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	r = h.run(t, "push", "--broadcast", "--data", "x").expect(t, exitOK)
	if _, rest := cutID(t, r.stdout); rest != "RECIPIENTS: 4\nOTHER_NODES: 0\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	reqs := pushRequests(t, tp)
	if reqs[0].Group == nil || *reqs[0].Group != "room-1" || !reqs[1].Broadcast {
		t.Fatalf("requests %+v", reqs)
	}
}

func TestPush_PayloadSources(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	tp := newTap(t, node.PushURL, tapHooks{})
	h := harness{env: testEnv(tp.url()), stdin: "\x00\xff binary"}
	h.run(t, "push", "--device", "d", "--data-file", "-").expect(t, exitOK)
	h.run(t, "push", "--device", "d", "--data-base64", "aGk=").expect(t, exitOK)
	reqs := pushRequests(t, tp)
	if reqs[0].Data != nil || *reqs[0].DataBase64 != base64.StdEncoding.EncodeToString([]byte("\x00\xff binary")) {
		t.Fatalf("binary stdin sent as %+v", reqs[0])
	}
	if *reqs[1].DataBase64 != "aGk=" {
		t.Fatalf("base64 sent as %+v", reqs[1])
	}
	if st, err := node.DeviceState(t.Context(), testApp, "d"); err != nil || st.Last != 2 {
		t.Fatalf("device d after two pushes: %+v, %v", st, err)
	}
}

func TestPush_UsageErrors(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	tp := newTap(t, node.PushURL, tapHooks{})
	h := harness{env: testEnv(tp.url())}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--data", "x"}, "exactly one of --device, --user, --group and --broadcast"},
		{[]string{"--device", "d", "--group", "g", "--data", "x"}, "exactly one of --device"},
		{[]string{"--device", "d", "--user", "u", "--data", "x"}, "exactly one of --device"},
		{[]string{"--device", "d", "--filter-tag", "vip", "--data", "x"}, "--filter-* go with --group or --broadcast"},
		{[]string{"--broadcast", "--filter-version", "..", "--data", "x"}, `--filter-version "..": a prefix, or MIN..MAX`},
		{[]string{"--device", "d"}, "exactly one of --data"},
		{[]string{"--device", "d", "--data", "x", "--data-base64", "eA=="}, "exactly one of --data"},
		{[]string{"--device", "d", "--data-base64", "%%%"}, "--data-base64"},
		{[]string{"--device", "d", "--data-file", "/nonexistent/payload"}, "--data-file"},
		{[]string{"--device", "d", "--data", "x", "--priority", "urgent"}, `--priority "urgent"`},
		{[]string{"--device", "d", "--data", "x", "--ttl", "1500ms"}, "whole seconds"},
		{[]string{"--group", "g", "--data", "x", "--wait-ack"}, "--wait-ack needs --device or --user"},
	}
	for _, tc := range cases {
		r := h.run(t, append([]string{"push"}, tc.args...)...).expect(t, exitUsage)
		if err := contains(r.stderr, tc.want); err != nil {
			t.Errorf("%v: %v", tc.args, err)
		}
	}
	if n := len(tp.requests()); n != 0 {
		t.Fatalf("usage errors sent %d requests", n)
	}
	r := harness{env: map[string]string{"PUSHD_APP": "a", "PUSHD_API_KEY": "k"}}.run(t, "push", "--device", "d", "--data", "x").expect(t, exitUsage)
	if err := contains(r.stderr, "missing push-url: set --push-url or $PUSHD_PUSH_URL"); err != nil {
		t.Error(err)
	}
}

func TestPush_APIErrorsExit1WithCode(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	big := strings.Repeat("x", appliance.DefaultMaxPayload+1)
	r := harness{env: testEnv(node.PushURL)}.run(t, "push", "--device", "d", "--data", big).expect(t, exitFailure)
	if err := contains(r.stderr, "push: POST /v1/push: HTTP 413 payload_too_large"); err != nil {
		t.Error(err)
	}
	env := testEnv(node.PushURL)
	env["PUSHD_API_KEY"] = "wrong-key-wrong-key"
	r = harness{env: env}.run(t, "push", "--device", "d", "--data", "x").expect(t, exitFailure)
	if err := contains(r.stderr, "HTTP 401 unauthorized"); err != nil {
		t.Error(err)
	}
	if r.stdout != "" {
		t.Errorf("failed push printed data: %q", r.stdout)
	}
}

func TestPush_WaitAckReportsLatency(t *testing.T) {
	t.Parallel()
	// Raw devices that send no PING: the idle limit must not cut them
	// however long a busy machine makes the test.
	node := startTestNode(t, true, func(c *appliance.Config) { c.HeartbeatInterval = time.Minute })
	// The devices' app takes 40ms over each message before it acks.
	for _, d := range []string{"a", "b"} {
		ackAfter(t, connectDevice(t, node, d), 40*time.Millisecond)
	}
	h := harness{env: testEnv(node.PushURL)}
	r := h.run(t, "push", "--device", "a", "--device", "b", "--data", "x", "--wait-ack").expect(t, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || lines[1] != "DEVICE  STATUS     SEQ  REASON  ACK" {
		t.Fatalf("stdout:\n%s", r.stdout)
	}
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		ms, err := time.ParseDuration(f[4])
		if err != nil || f[1] != api.StatusDelivered || ms < 40*time.Millisecond || ms > 2*time.Second {
			t.Errorf("ack latency %q: want delivered, and at least the 40ms the device takes", l)
		}
	}
	out := decodeJSON[pushOutput](t, h.run(t, "push", "--device", "a", "--data", "x", "--wait-ack", "-o", "json").expect(t, exitOK))
	if r := out.Results[0]; r.Acked == nil || !*r.Acked || r.AckLatencyMS == nil || *r.AckLatencyMS < 40 || r.Seq != 2 {
		t.Fatalf("json result %+v", r)
	}
}

func TestPush_WaitAckTimeoutNamesDevices(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	start := time.Now()
	// slow-1 and slow-2 are offline: stored, never acked.
	r := harness{env: testEnv(node.PushURL)}.run(t, "push", "--device", "slow-1", "--device", "slow-2", "--device", "r/r",
		"--data", "x", "--wait-ack", "--timeout", "150ms").expect(t, exitFailure)
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("took %s with a 150ms timeout", el)
	}
	if err := contains(r.stdout, "slow-1  stored    1    -               timeout"); err != nil {
		t.Error(err)
	}
	if err := contains(r.stderr, "not acked within 150ms: slow-1, slow-2"); err != nil {
		t.Error(err)
	}
	if err := contains(r.stderr, "1 of 3 devices rejected: r/r (invalid_device)"); err != nil {
		t.Error(err)
	}
}
