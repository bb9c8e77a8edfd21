package ctl

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/api"
)

func TestPush_TableShowsIDAndEachDevice(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	fake.deliver = func(device, _ string, _ uint64, _ []byte) bool { return device == "phone-1" }
	h := harness{env: testEnv(fake.url())}
	r := h.run(t, "push", "--device", "phone-1", "--device", "phone-2", "--data", "hello", "--business", "chat",
		"--priority", "high", "--ttl", "30s", "--idempotency-key", "k-1").expect(t, exitOK)
	want := "ID: 00000000000000000000000000000001\n" +
		"DEVICE   STATUS     SEQ  REASON\n" +
		"phone-1  delivered  1    -\n" +
		"phone-2  stored     1    -\n"
	if r.stdout != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
	req := fake.recorded()[0]
	if *req.Data != "hello" || *req.Business != "chat" || *req.Priority != "high" || *req.TTL != 30 || *req.IdempotencyKey != "k-1" || *req.App != testApp {
		t.Fatalf("request %+v", req)
	}
}

func TestPush_JSONAndRejectedExit1(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	fake.reject["gone"] = "degraded"
	r := harness{env: testEnv(fake.url())}.run(t, "push", "--device", "ok", "--device", "gone", "--device", "bad id",
		"--data", "", "--json").expect(t, exitFailure)
	out := decodeJSON[pushOutput](t, r)
	if out.ID == "" || !out.Stored || len(out.Results) != 3 {
		t.Fatalf("%+v", out)
	}
	if out.Results[1].Status != api.StatusRejected || out.Results[1].Reason != "degraded" || out.Results[2].Reason != "invalid_device" {
		t.Fatalf("results %+v", out.Results)
	}
	if err := contains(r.stderr, "2 of 3 devices rejected: gone (degraded), bad id (invalid_device)"); err != nil {
		t.Error(err)
	}
	// An empty --data is a payload, not a missing one.
	if d := fake.recorded()[0].Data; d == nil || *d != "" {
		t.Fatalf("data %v", d)
	}
}

func TestPush_GroupAndBroadcastPrintRecipients(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	h := harness{env: testEnv(fake.url())}
	r := h.run(t, "push", "--group", "room-1", "--data", "x").expect(t, exitOK)
	if r.stdout != "ID: 00000000000000000000000000000001\nRECIPIENTS: 3\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	h.run(t, "push", "--broadcast", "--data", "x").expect(t, exitOK)
	reqs := fake.recorded()
	if reqs[0].Group == nil || *reqs[0].Group != "room-1" || !reqs[1].Broadcast {
		t.Fatalf("requests %+v", reqs)
	}
}

func TestPush_PayloadSources(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	h := harness{env: testEnv(fake.url()), stdin: "\x00\xff binary"}
	h.run(t, "push", "--device", "d", "--data-file", "-").expect(t, exitOK)
	h.run(t, "push", "--device", "d", "--data-base64", "aGk=").expect(t, exitOK)
	reqs := fake.recorded()
	if reqs[0].Data != nil || *reqs[0].DataBase64 != base64.StdEncoding.EncodeToString([]byte("\x00\xff binary")) {
		t.Fatalf("binary stdin sent as %+v", reqs[0])
	}
	if *reqs[1].DataBase64 != "aGk=" {
		t.Fatalf("base64 sent as %+v", reqs[1])
	}
}

func TestPush_UsageErrors(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	h := harness{env: testEnv(fake.url())}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--data", "x"}, "exactly one of --device, --group and --broadcast"},
		{[]string{"--device", "d", "--group", "g", "--data", "x"}, "exactly one of --device"},
		{[]string{"--device", "d"}, "exactly one of --data"},
		{[]string{"--device", "d", "--data", "x", "--data-base64", "eA=="}, "exactly one of --data"},
		{[]string{"--device", "d", "--data-base64", "%%%"}, "--data-base64"},
		{[]string{"--device", "d", "--data-file", "/nonexistent/payload"}, "--data-file"},
		{[]string{"--device", "d", "--data", "x", "--priority", "urgent"}, `--priority "urgent"`},
		{[]string{"--device", "d", "--data", "x", "--ttl", "1500ms"}, "whole seconds"},
		{[]string{"--group", "g", "--data", "x", "--wait-ack"}, "--wait-ack needs --device"},
	}
	for _, tc := range cases {
		r := h.run(t, append([]string{"push"}, tc.args...)...).expect(t, exitUsage)
		if err := contains(r.stderr, tc.want); err != nil {
			t.Errorf("%v: %v", tc.args, err)
		}
	}
	if n := len(fake.recorded()); n != 0 {
		t.Fatalf("usage errors sent %d requests", n)
	}
	r := harness{env: map[string]string{"PUSHD_APP": "a", "PUSHD_API_KEY": "k"}}.run(t, "push", "--device", "d", "--data", "x").expect(t, exitUsage)
	if err := contains(r.stderr, "missing push-url: set --push-url or $PUSHD_PUSH_URL"); err != nil {
		t.Error(err)
	}
}

func TestPush_APIErrorsExit1WithCode(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	fake.failStatus, fake.failCode = 413, "payload_too_large"
	r := harness{env: testEnv(fake.url())}.run(t, "push", "--device", "d", "--data", "x").expect(t, exitFailure)
	if err := contains(r.stderr, "push: POST /v1/push: HTTP 413 payload_too_large"); err != nil {
		t.Error(err)
	}
	env := testEnv(fake.url())
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
	fake := newFakePushAPI(t)
	fake.ackAfter = 40 * time.Millisecond
	r := harness{env: testEnv(fake.url())}.run(t, "push", "--device", "a", "--device", "b", "--data", "x", "--wait-ack").expect(t, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || lines[1] != "DEVICE  STATUS  SEQ  REASON  ACK" {
		t.Fatalf("stdout:\n%s", r.stdout)
	}
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		ms, err := time.ParseDuration(f[4])
		if err != nil || ms < 40*time.Millisecond || ms > 2*time.Second {
			t.Errorf("ack latency %q: want at least the 40ms the fake takes", l)
		}
	}
	out := decodeJSON[pushOutput](t, harness{env: testEnv(fake.url())}.run(t, "push", "--device", "a", "--data", "x", "--wait-ack", "-o", "json").expect(t, exitOK))
	if r := out.Results[0]; r.Acked == nil || !*r.Acked || r.AckLatencyMS == nil || *r.AckLatencyMS < 40 {
		t.Fatalf("json result %+v", r)
	}
}

func TestPush_WaitAckTimeoutNamesDevices(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	fake.ackAfter = -1
	fake.reject["r"] = "degraded"
	start := time.Now()
	r := harness{env: testEnv(fake.url())}.run(t, "push", "--device", "slow-1", "--device", "slow-2", "--device", "r",
		"--data", "x", "--wait-ack", "--timeout", "150ms").expect(t, exitFailure)
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("took %s with a 150ms timeout", el)
	}
	if err := contains(r.stdout, "slow-1  stored    1    -         timeout"); err != nil {
		t.Error(err)
	}
	if err := contains(r.stderr, "not acked within 150ms: slow-1, slow-2"); err != nil {
		t.Error(err)
	}
	if err := contains(r.stderr, "1 of 3 devices rejected: r (degraded)"); err != nil {
		t.Error(err)
	}
}
