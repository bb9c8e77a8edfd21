package ctl

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeAdmin is an httptest admin API whose answers a test scripts; it
// records what pushctl sent.
type fakeAdmin struct {
	srv *httptest.Server

	mu   sync.Mutex
	reqs []adminRequest
	// answer returns the status, extra headers and body of the n-th
	// request (0-based).
	answer func(n int, r adminRequest) (int, http.Header, string)
}

type adminRequest struct {
	method, path, requestID, auth string
	body                          map[string]any
}

func newFakeAdmin(t *testing.T, answer func(n int, r adminRequest) (int, http.Header, string)) *fakeAdmin {
	t.Helper()
	f := &fakeAdmin{answer: answer}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		req := adminRequest{method: r.Method, path: r.URL.Path, requestID: r.Header.Get("X-Request-ID"), auth: r.Header.Get("Authorization")}
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &req.body); err != nil {
				t.Errorf("%s %s: body is not a JSON object: %q", r.Method, r.URL.Path, raw)
			}
		}
		f.mu.Lock()
		n := len(f.reqs)
		f.reqs = append(f.reqs, req)
		f.mu.Unlock()
		status, h, body := f.answer(n, req)
		if status == dropConnection {
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				_ = conn.Close()
			}
			return
		}
		for k, v := range h {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// dropConnection, as a fakeAdmin answer's status, closes the connection
// without answering.
const dropConnection = -1

// refusingAdmin is an admin API that fails the test when called at all.
func refusingAdmin(t *testing.T) *fakeAdmin {
	return newFakeAdmin(t, func(_ int, r adminRequest) (int, http.Header, string) {
		t.Errorf("the admin API was called: %s %s", r.method, r.path)
		return http.StatusTeapot, nil, `{}`
	})
}

func (f *fakeAdmin) requests() []adminRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]adminRequest(nil), f.reqs...)
}

func (f *fakeAdmin) harness() harness {
	return harness{env: map[string]string{"PUSHD_ADMIN_URL": f.srv.URL, "PUSHD_ADMIN_TOKEN": "tok"}}
}

func adminAnswer(status int, code, msg string) (int, http.Header, string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	return status, nil, string(b)
}

func TestAdmin_UsageErrorsExit2WithoutCallingTheAPI(t *testing.T) {
	t.Parallel()
	h := refusingAdmin(t).harness()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"degrade", "--priority", "normal"}, "missing --reason"},
		{[]string{"degrade", "--priority", "normal", "--reason", "  "}, "missing --reason"},
		{[]string{"degrade", "--reason", "x"}, "missing --priority"},
		{[]string{"degrade", "--priority", "urgent", "--reason", "x"}, `--priority "urgent": want low, normal or high`},
		{[]string{"degrade"}, "missing --priority"},
		{[]string{"degrade", "sideways"}, `unknown command "sideways"`},
		{[]string{"degrade", "--priority", "high", "off"}, "--priority sets degrade; it does not go with 'degrade off'"},
		{[]string{"degrade", "--reason", "x", "status"}, "--reason sets degrade; it does not go with 'degrade status'"},
		{[]string{"degrade", "off", "--priority", "low"}, "flag provided but not defined: -priority"},
		{[]string{"app", "delete", "shop"}, "add --yes to confirm"},
		{[]string{"app", "delete", "--yes"}, "missing APP"},
		{[]string{"app", "create", "shop", "--rate", "-5"}, "--rate -5: must be 0 or more"},
		{[]string{"app", "create", "shop", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"app", "set-limits", "shop"}, "nothing to change"},
		{[]string{"app", "set-limits", "shop", "--business", "ads", "--any-business"}, "contradict"},
		{[]string{"app", "revoke-key", "shop"}, "missing KEY_ID"},
		{[]string{"app", "list", "--frobnicate"}, "flag provided but not defined: -frobnicate"},
		{[]string{"status", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"status", "-o", "yaml"}, `-o "yaml": want table or json`},
		{[]string{"nodes", "weight", "n1", "2000"}, `WEIGHT "2000": want a whole number from 0 to 1000`},
		{[]string{"nodes", "weight", "n1"}, "missing WEIGHT"},
		{[]string{"nodes", "drain"}, "missing NODE"},
		{[]string{"nodes", "join", "--id", "n4", "--raft-addr", "h:1"}, "missing --admin-addr"},
		{[]string{"nodes", "join", "--id", "n4", "--raft-addr", "h:1", "--admin-addr", "h:2", "--device-addr", "h:3"}, `--device-addr "h:3": want a ws://host:port URL`},
		{[]string{"nodes", "join", "--id", "n4", "--raft-addr", "h:1", "--admin-addr", "h:2", "--weight", "1001"}, "--weight 1001"},
		{[]string{"nodes", "frob"}, `unknown command "frob"`},
		{[]string{"token", "create-admin", "bob"}, "missing --role"},
		{[]string{"token", "create-admin", "bob", "--role", "root"}, `--role "root": want viewer, operator or admin`},
		{[]string{"token", "revoke-admin"}, "missing ID"},
		{[]string{"tunables", "set"}, "nothing to change"},
		{[]string{"tunables", "set", "--window", "0"}, "--window 0: must be 1 to 1024"},
		{[]string{"tunables", "set", "--ack-timeout", "0s"}, "--ack-timeout 0s: must be more than 0"},
		{[]string{"tunables", "set", "--queue-bytes", "soon"}, "invalid value"},
		{[]string{"audit", "--limit", "-1"}, "--limit -1: must be 0 or more"},
	}
	for _, tc := range cases {
		r := h.run(t, tc.args...).expect(t, exitUsage)
		if r.stdout != "" {
			t.Errorf("%q wrote to stdout:\n%s", tc.args, r.stdout)
		}
		if err := contains(r.stderr, tc.want); err != nil {
			t.Errorf("%q: %v", tc.args, err)
		}
		if err := contains(r.stderr, "Run 'pushctl "); err != nil {
			t.Errorf("%q: no help hint: %v", tc.args, err)
		}
	}
	// Without an admin URL nothing can be called: a usage error saying
	// where to set it.
	r := harness{env: map[string]string{}}.run(t, "status").expect(t, exitUsage)
	if err := contains(r.stderr, "missing admin-url: set --admin-url or $PUSHD_ADMIN_URL"); err != nil {
		t.Error(err)
	}
}

func TestAdmin_HelpListsTheCommands(t *testing.T) {
	t.Parallel()
	r := harness{}.run(t, "--help").expect(t, exitOK)
	for _, c := range []string{"status", "nodes", "app", "degrade", "tunables", "audit"} {
		if err := contains(r.stdout, "\n   "+c+" "); err != nil {
			t.Error(err)
		}
	}
	for _, args := range [][]string{{"degrade", "-h"}, {"degrade", "help"}, {"degrade", "off", "--help"}, {"nodes", "-h"}, {"app", "delete", "-h"}, {"token", "-h"}} {
		r := harness{}.run(t, args...).expect(t, exitOK)
		if !strings.Contains(r.stdout, "USAGE:") || r.stderr != "" {
			t.Errorf("%q: stdout %q, stderr %q", args, r.stdout, r.stderr)
		}
	}
	r = harness{}.run(t, "token", "-h").expect(t, exitOK)
	for _, c := range []string{"issue", "create-admin", "revoke-admin", "list-admin"} {
		if err := contains(r.stdout, c); err != nil {
			t.Error(err)
		}
	}
}

// TestDegrade_FlagsAndSubcommandsCoexist: degrade is a command with an
// action and subcommands; its flags and theirs parse in either place.
func TestDegrade_FlagsAndSubcommandsCoexist(t *testing.T) {
	t.Parallel()
	f := newFakeAdmin(t, func(_ int, r adminRequest) (int, http.Header, string) {
		if r.method == http.MethodGet {
			return 200, nil, `{"active":true,"priority":"normal","businesses":["ads"],"reason":"surge","by":"root","since":"2026-11-22T05:06:24Z"}`
		}
		return 200, nil, `{"index":7}`
	})
	h := f.harness()
	runs := []struct {
		args   []string
		stdout string
		path   string
		body   string
	}{
		{[]string{"degrade", "--priority", "low", "--reason", "x"}, "degrade on: refusing low priority pushes\n", "/v1/admin/degrade", `{"priority":"low","reason":"x"}`},
		{[]string{"degrade", "--priority", "high", "--business", "ads", "--business", "chat", "--reason", "surge"},
			"degrade on: refusing pushes of every priority of ads, chat\n", "/v1/admin/degrade",
			`{"businesses":["ads","chat"],"priority":"high","reason":"surge"}`},
		{[]string{"-o", "json", "degrade", "--priority", "normal", "--reason", "late"}, `{"index":7}` + "\n", "/v1/admin/degrade", `{"priority":"normal","reason":"late"}`},
		{[]string{"degrade", "off"}, "degrade off\n", "/v1/admin/degrade/off", `{"reason":""}`},
		{[]string{"degrade", "off", "--reason", "recovered"}, "degrade off\n", "/v1/admin/degrade/off", `{"reason":"recovered"}`},
		{[]string{"degrade", "--reason", "recovered", "off"}, "degrade off\n", "/v1/admin/degrade/off", `{"reason":"recovered"}`},
		{[]string{"degrade", "off", "-o", "json"}, `{"index":7}` + "\n", "/v1/admin/degrade/off", `{"reason":""}`},
		{[]string{"degrade", "status"}, "DEGRADE     on\nPRIORITY    normal\nBUSINESSES  ads\nREASON      surge\nBY          root\nSINCE       2026-11-22T05:06:24Z\n", "/v1/admin/degrade", ""},
		{[]string{"-o", "json", "degrade", "status"}, `{"active":true,"priority":"normal","businesses":["ads"],"reason":"surge","by":"root","since":"2026-11-22T05:06:24Z"}` + "\n", "/v1/admin/degrade", ""},
		{[]string{"degrade", "status", "--json"}, `{"active":true,"priority":"normal","businesses":["ads"],"reason":"surge","by":"root","since":"2026-11-22T05:06:24Z"}` + "\n", "/v1/admin/degrade", ""},
	}
	for i, run := range runs {
		r := h.run(t, run.args...).expect(t, exitOK)
		if r.stdout != run.stdout {
			t.Errorf("%q: stdout\n%s\nwant\n%s", run.args, r.stdout, run.stdout)
		}
		reqs := f.requests()
		if len(reqs) != i+1 {
			t.Fatalf("%q: %d requests in all, want %d", run.args, len(reqs), i+1)
		}
		got := reqs[i]
		body := ""
		if got.body != nil {
			b, _ := json.Marshal(got.body)
			body = string(b)
		}
		if got.path != run.path || body != run.body {
			t.Errorf("%q sent %s %s %s, want %s %s", run.args, got.method, got.path, body, run.path, run.body)
		}
		if got.auth != "Bearer tok" {
			t.Errorf("%q: Authorization %q", run.args, got.auth)
		}
		if (got.method == http.MethodPost) != (got.requestID != "") {
			t.Errorf("%q: %s with X-Request-ID %q: writes carry one, reads none", run.args, got.method, got.requestID)
		}
	}
}

// TestAdmin_WritesRetryWithTheSameRequestID: while the region has no
// leader, a write is sent again with the same request id, so the region
// applies it once.
func TestAdmin_WritesRetryWithTheSameRequestID(t *testing.T) {
	t.Parallel()
	f := newFakeAdmin(t, func(n int, _ adminRequest) (int, http.Header, string) {
		switch n {
		case 0:
			s, _, b := adminAnswer(503, "not_leader", "no leader known right now; retry")
			return s, http.Header{"Retry-After": {"0"}}, b
		case 1:
			s, _, b := adminAnswer(503, "unavailable", "leadership lost while committing")
			return s, http.Header{"Retry-After": {"0"}}, b
		}
		return 200, nil, `{"index":12,"replayed":true}`
	})
	r := f.harness().run(t, "nodes", "drain", "n2").expect(t, exitOK)
	if r.stdout != "node n2 draining: dispatch sends it no new devices and its connected devices are moving to other nodes\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	want := "pushctl: POST /v1/admin/nodes/n2/drain: not_leader: no leader known right now; retry; sending it again in 100ms (same request id)\n" +
		"pushctl: POST /v1/admin/nodes/n2/drain: unavailable: leadership lost while committing; sending it again in 200ms (same request id)\n"
	if r.stderr != want {
		t.Errorf("stderr\n%s\nwant\n%s", r.stderr, want)
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d attempts, want 3", len(reqs))
	}
	for _, req := range reqs {
		if req.requestID == "" || req.requestID != reqs[0].requestID || req.path != "/v1/admin/nodes/n2/drain" || req.body["draining"] != true {
			t.Fatalf("attempt %+v differs from the first %+v", req, reqs[0])
		}
	}
	// A second invocation is a new request.
	f.harness().run(t, "nodes", "drain", "n2", "--off").expect(t, exitOK)
	if last := f.requests()[3]; last.requestID == reqs[0].requestID || last.body["draining"] != false {
		t.Fatalf("second invocation sent %+v", last)
	}
}

// TestAdmin_WritesRetryAfterAConnectionFails: a write whose connection
// drops before an answer (it may or may not have arrived) is sent again
// with the same request id, after a pause that doubles each time, and so
// is one the region answers 503 not_leader; a read is sent again after a
// dropped connection too, without a request id.
func TestAdmin_WritesRetryAfterAConnectionFails(t *testing.T) {
	t.Parallel()
	f := newFakeAdmin(t, func(n int, r adminRequest) (int, http.Header, string) {
		switch {
		case r.method == http.MethodGet && n < 5:
			// Two drops: Go's transport itself sends a GET again once
			// when a pooled connection fails, so at least one reaches
			// pushctl.
			return dropConnection, nil, ""
		case r.method == http.MethodGet:
			return 200, nil, `{"active":false}`
		case n == 0:
			return dropConnection, nil, ""
		case n == 1:
			s, _, b := adminAnswer(503, "not_leader", "no leader took the write within 10s: no leader known right now; retry")
			return s, http.Header{"Retry-After": {"0"}}, b
		}
		return 200, nil, `{"index":7}`
	})
	r := f.harness().run(t, "degrade", "--priority", "low", "--reason", "drill").expect(t, exitOK)
	want := []string{
		"pushctl: POST /v1/admin/degrade: connection closed before an answer; sending it again in 100ms (same request id)",
		"pushctl: POST /v1/admin/degrade: not_leader: no leader took the write within 10s: no leader known right now; retry; sending it again in 200ms (same request id)",
	}
	if got := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n"); !slices.Equal(got, want) {
		t.Errorf("stderr\n%s\nwant\n%s", r.stderr, strings.Join(want, "\n"))
	}
	reqs := f.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d attempts, want 3", len(reqs))
	}
	for _, req := range reqs {
		if req.requestID == "" || req.requestID != reqs[0].requestID || req.body["priority"] != "low" {
			t.Fatalf("attempt %+v differs from the first %+v", req, reqs[0])
		}
	}

	r = f.harness().run(t, "degrade", "status").expect(t, exitOK)
	if err := contains(r.stderr, "pushctl: GET /v1/admin/degrade: connection closed before an answer; sending it again in 100ms\n"); err != nil {
		t.Error(err)
	}
	reqs = f.requests()
	if len(reqs) != 6 {
		t.Fatalf("the read's attempts: %+v, want 3", reqs[3:])
	}
	for _, req := range reqs[3:] {
		if req.requestID != "" || req.method != http.MethodGet || req.path != "/v1/admin/degrade" {
			t.Fatalf("a read's attempt %+v", req)
		}
	}
}

func TestAdmin_GivesUpWhenTheRegionStaysUnavailable(t *testing.T) {
	t.Parallel()
	f := newFakeAdmin(t, func(int, adminRequest) (int, http.Header, string) {
		s, _, b := adminAnswer(503, "not_leader", "no leader known right now; retry")
		// Longer than the retry budget: pushctl gives up at once.
		return s, http.Header{"Retry-After": {"60"}}, b
	})
	r := f.harness().run(t, "degrade", "off").expect(t, exitFailure)
	want := "pushctl: degrade off: POST /v1/admin/degrade/off: HTTP 503 not_leader: no leader known right now; retry (retry after 1m0s); gave up after 1 attempt"
	if err := contains(r.stderr, want); err != nil {
		t.Error(err)
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("%d attempts", n)
	}
}

func TestAdmin_RefusalsAreExplained(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args   []string
		status int
		code   string
		msg    string
		want   string
	}{
		{[]string{"status"}, 401, "unauthorized", "missing or unknown admin token",
			"pushctl: status: admin token missing or unknown (set --admin-token or PUSHD_ADMIN_TOKEN)\n"},
		{[]string{"degrade", "--priority", "normal", "--reason", "x"}, 403, "forbidden", "this call needs the operator role; the token has viewer",
			"pushctl: degrade: forbidden: this call needs the operator role; the token has viewer\n"},
		{[]string{"app", "delete", "nope", "--yes"}, 404, "not_found", `app "nope": not found`,
			"pushctl: app delete nope: app \"nope\": not found\n"},
		{[]string{"app", "create", "shop"}, 409, "conflict", `app "shop" exists: conflict`,
			"pushctl: app create shop: app \"shop\" exists: conflict\n"},
		{[]string{"tunables", "set", "--queue-bytes", "10"}, 400, "invalid", "queue_bytes must hold at least one frame (65536 bytes)",
			"pushctl: tunables set: queue_bytes must hold at least one frame (65536 bytes)\n"},
		{[]string{"app", "rotate-secret", "shop"}, 409, "conflict",
			"this request id was already applied; its secret was shown then and is not shown again (rotate to get a new one)",
			"pushctl: app rotate-secret shop: an earlier attempt of this request was applied, but its answer was lost on the way; " +
				"what it generated is not shown again: this request id was already applied; its secret was shown then and is not shown again (rotate to get a new one)\n"},
		{[]string{"audit"}, 500, "internal", "boom", "pushctl: audit: GET /v1/admin/audit: HTTP 500 internal: boom\n"},
	}
	for _, tc := range cases {
		f := newFakeAdmin(t, func(int, adminRequest) (int, http.Header, string) { return adminAnswer(tc.status, tc.code, tc.msg) })
		r := f.harness().run(t, tc.args...).expect(t, exitFailure)
		if r.stderr != tc.want || r.stdout != "" {
			t.Errorf("%q: stdout %q, stderr\n%q\nwant\n%q", tc.args, r.stdout, r.stderr, tc.want)
		}
	}
}

// TestAdmin_OperationsDocCommandsRun runs every pushctl command line of
// docs/operations.md against a permissive fake, so the runbook and the
// command tree cannot drift apart.
func TestAdmin_OperationsDocCommandsRun(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeAdmin(t, func(_ int, r adminRequest) (int, http.Header, string) {
		switch {
		case r.method == http.MethodGet && r.path == "/v1/admin/apps":
			return 200, nil, `{"apps":[{"id":"shop","key_ids":["k1"],"api_keys":["key-1"],"max_payload":8192,"rate_per_sec":5000,"burst":10000,"businesses":null,"created":"2026-11-22T05:06:24Z"}]}`
		case r.method == http.MethodPost && r.path == "/v1/admin/tokens":
			return 200, nil, `{"id":"ops-bob","role":"operator","token":"pa_x"}`
		}
		return 200, nil, `{}`
	})
	var lines []string
	for _, m := range regexp.MustCompile("(?m)^    (pushctl [^#\n]*)|`(pushctl [^`]*)`").FindAllStringSubmatch(string(doc), -1) {
		line := strings.TrimSpace(m[1] + m[2])
		// token issue is documented in docs/pushctl.md; the runbook only
		// names it.
		if line != "pushctl" && line != "pushctl token issue" {
			lines = append(lines, line)
		}
	}
	if len(lines) < 15 {
		t.Fatalf("found only %d pushctl command lines in docs/operations.md: %q", len(lines), lines)
	}
	for _, line := range lines {
		args := shellWords(t, line)[1:]
		if r := f.harness().run(t, args...); r.code != exitOK {
			t.Errorf("docs/operations.md: %s: exit %d\n%s", line, r.code, r.stderr)
		}
	}
}

// shellWords splits a documented command line: words separated by spaces,
// double quotes grouping.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, c := range line {
		switch {
		case c == '"':
			quoted, inWord = !quoted, true
		case c == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
			}
			inWord = false
		default:
			w.WriteRune(c)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quotes in %q", line)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}
