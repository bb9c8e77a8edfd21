package ctl

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pushd/pushd/appliance/api"
)

// devicesFile writes a devices file of d-1 … d-n, with a comment and a
// blank line among them, and returns its path.
func devicesFile(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# the fleet\n\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  d-%d\n", i)
	}
	path := filepath.Join(t.TempDir(), "devices.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPush_DevicesFileInBatches: 2,500 devices go in three batches, one
// message each. The second batch's answer is lost and the third is
// refused 503 once: both are sent again with the same idempotency key,
// and stored once. The summary counts what the region answered.
func TestPush_DevicesFileInBatches(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true, silentDevicesStay)
	connectDevice(t, node, "d-1")
	connectDevice(t, node, "d-2")
	tp := newTap(t, node.PushURL, tapHooks{
		drop: func(n int, _ tapped) bool { return n == 1 },
		answer: func(n int, _ tapped) (int, string, bool) {
			if n == 3 {
				return http.StatusServiceUnavailable, `{"error":{"code":"unavailable","message":"try again"}}`, true
			}
			return 0, "", false
		},
		rewrite: func(n int, _ tapped, body []byte) []byte {
			if n != 0 {
				return body
			}
			// The region refuses one device of the first batch.
			var resp api.PushResponse
			if err := json.Unmarshal(body, &resp); err != nil {
				t.Error(err)
				return body
			}
			resp.Results[999] = api.PushResult{Device: resp.Results[999].Device, Status: api.StatusRejected, Reason: "rate_limited"}
			b, _ := json.Marshal(resp)
			return b
		},
	})
	h := harness{env: testEnv(tp.url())}
	file := devicesFile(t, 2500)
	r := h.run(t, "push", "--devices-file", file, "--data", "hello all", "--concurrency", "1", "--idempotency-key", "fleet", "-o", "json").expect(t, exitFailure)
	out := decodeJSON[pushFileOutput](t, r)
	if out.Devices != 2500 || out.Batches != 3 || out.Sent != 2500 || out.Stored != 2499 || out.Delivered != 2 ||
		len(out.Rejected) != 1 || out.Rejected["rate_limited"] != 1 || out.Failed != 0 || len(out.Errors) != 0 {
		t.Fatalf("summary %+v", out)
	}
	if len(out.Messages) != 3 || out.Messages[0].Devices != 1000 || out.Messages[2].Devices != 500 ||
		out.Messages[0].ID == out.Messages[1].ID || out.Messages[0].Rejected != 1 || out.Messages[0].Delivered != 2 {
		t.Fatalf("messages %+v", out.Messages)
	}
	if err := contains(r.stderr, "pushctl push: 2500/2500 devices sent in 3 batches (0 failed) in "); err != nil {
		t.Fatal(err)
	}
	if err := contains(r.stderr, "pushctl: push: 1 of 2500 devices rejected, 0 in batches that failed"); err != nil {
		t.Fatal(err)
	}
	reqs := pushRequests(t, tp)
	var keys []string
	for _, req := range reqs {
		keys = append(keys, fmt.Sprintf("%s:%d", *req.IdempotencyKey, len(req.Devices)))
		if *req.Data != "hello all" || *req.App != testApp {
			t.Fatalf("request %+v", req)
		}
	}
	if got := strings.Join(keys, " "); got != "fleet-1:1000 fleet-2:1000 fleet-2:1000 fleet-3:500 fleet-3:500" {
		t.Fatalf("requests %s", got)
	}
	if reqs[0].Devices[0] != "d-1" || reqs[4].Devices[499] != "d-2500" {
		t.Fatalf("batches from %s to %s", reqs[0].Devices[0], reqs[4].Devices[499])
	}
	// The batch whose answer was lost is stored once.
	st, err := node.DeviceState(t.Context(), testApp, "d-1500")
	if err != nil || st.InboxLen != 1 {
		t.Fatalf("d-1500: %+v, %v", st, err)
	}
}

func TestPush_DevicesFileTable(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true, silentDevicesStay)
	connectDevice(t, node, "d-3")
	h := harness{env: testEnv(node.PushURL), stdin: "a\nb\n# c\nd-3\n"}
	r := h.run(t, "push", "--devices-file", "-", "--data", "x", "--batch", "2").expect(t, exitOK)
	want := "DEVICES    3\n" +
		"BATCHES    2\n" +
		"SENT       3\n" +
		"STORED     3\n" +
		"DELIVERED  1\n" +
		"REJECTED   0\n" +
		"FAILED     0\n"
	if r.stdout != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
	if !strings.HasPrefix(r.stderr, "pushctl push: 3/3 devices sent in 2 batches (0 failed) in ") {
		t.Fatalf("stderr %q", r.stderr)
	}
}

// TestPush_DevicesFileStopsOnARefusalEveryBatchWouldGet: a 4xx that is
// not about load (here a payload too large) stops the run: the batches
// not sent yet are counted failed, not sent to be refused too.
func TestPush_DevicesFileStopsOnARefusalEveryBatchWouldGet(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	tp := newTap(t, node.PushURL, tapHooks{})
	h := harness{env: testEnv(tp.url())}
	r := h.run(t, "push", "--devices-file", devicesFile(t, 50), "--data", strings.Repeat("x", 5000), "--batch", "5",
		"--concurrency", "2").expect(t, exitFailure)
	if n := len(tp.requests()); n > 3 {
		t.Fatalf("%d requests after the first refusal", n)
	}
	if err := contains(r.stdout, "FAILED     50\n"); err != nil {
		t.Fatal(err)
	}
	if err := contains(r.stderr, "payload_too_large"); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`not sent: batch [12] was refused payload_too_large, as every batch would be`).MatchString(r.stderr) {
		t.Fatalf("stderr:\n%s", r.stderr)
	}
}

func TestPush_DevicesFileUsageErrors(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	tp := newTap(t, node.PushURL, tapHooks{})
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "a\nb\n")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--devices-file", filepath.Join(dir, "missing")}, "--devices-file: open"},
		{[]string{"--devices-file", write("bad", "a\nnot valid\n")}, `line 2: "not valid" is not a device id`},
		{[]string{"--devices-file", write("dup", "a\nb\n\na\n")}, "line 4: device a again (first on line 1)"},
		{[]string{"--devices-file", write("empty", "# nobody\n\n")}, "lists no device"},
		{[]string{"--devices-file", good, "--batch", "0"}, "--batch 0: must be 1..1000"},
		{[]string{"--devices-file", good, "--batch", "1001"}, "--batch 1001"},
		{[]string{"--devices-file", good, "--concurrency", "0"}, "--concurrency 0"},
		{[]string{"--devices-file", good, "--wait-ack"}, "--wait-ack does not go with --devices-file"},
		{[]string{"--devices-file", good, "--device", "c"}, "give exactly one of --device, --devices-file, --user, --group and --broadcast"},
		{[]string{"--devices-file", "-", "--data-file", "-"}, "cannot both read stdin"},
		{[]string{"--device", "c", "--batch", "3"}, "--batch goes with --devices-file"},
	}
	h := harness{env: testEnv(tp.url())}
	for _, tc := range cases {
		args := append([]string{"push"}, tc.args...)
		if !strings.Contains(strings.Join(tc.args, " "), "--data-file") {
			args = append(args, "--data", "x")
		}
		r := h.run(t, args...).expect(t, exitUsage)
		if err := contains(r.stderr, tc.want); err != nil {
			t.Errorf("%q: %v", tc.args, err)
		}
		if r.stdout != "" {
			t.Errorf("%q wrote %q", tc.args, r.stdout)
		}
	}
	if n := len(tp.requests()); n != 0 {
		t.Fatalf("usage errors sent %d requests", n)
	}
}
