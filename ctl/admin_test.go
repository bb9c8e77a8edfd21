package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/internal/poll"
)

// tripwire is an admin API that fails the test when called at all:
// pushctl's usage errors must never reach the region.
func tripwire(t *testing.T) harness {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		t.Errorf("the admin API was called: %s %s", r.Method, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return harness{env: map[string]string{"PUSHD_ADMIN_URL": srv.URL, "PUSHD_ADMIN_TOKEN": "tok"}}
}

func TestAdmin_UsageErrorsExit2WithoutCallingTheAPI(t *testing.T) {
	t.Parallel()
	h := tripwire(t)
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
	for _, c := range []string{"status", "nodes", "app", "degrade", "tunables", "audit", "bridge"} {
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
// Each run's request is checked as it reached the region, and its output
// against what the region answered.
func TestDegrade_FlagsAndSubcommandsCoexist(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 1)
	tp := newTap(t, r.Nodes[0].AdminURL, tapHooks{})
	h := harness{env: map[string]string{"PUSHD_ADMIN_URL": tp.url(), "PUSHD_ADMIN_TOKEN": r.Admin}}
	admin, err := api.NewClient(r.Nodes[0].AdminURL, r.Admin, nil)
	if err != nil {
		t.Fatal(err)
	}
	// statusTable is degrade status's table of the region's policy now.
	statusTable := func() string {
		d, err := admin.Degrade(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		tb := newTable(&b)
		degradeRows(tb, *d)
		_ = tb.flush()
		return b.String()
	}
	index := regexp.MustCompile(`^\{"index":[1-9][0-9]*(,"replayed":true)?\}\n$`)
	runs := []struct {
		args   []string
		stdout string // "index": an applied write's JSON; "status": the policy's table; "json": the policy in JSON
		path   string
		body   string
	}{
		{[]string{"degrade", "--priority", "low", "--reason", "x"}, "degrade on: refusing low priority pushes\n", "/v1/admin/degrade", `{"priority":"low","reason":"x"}`},
		{[]string{"degrade", "--priority", "high", "--business", "ads", "--business", "chat", "--reason", "surge"},
			"degrade on: refusing pushes of every priority of ads, chat\n", "/v1/admin/degrade",
			`{"businesses":["ads","chat"],"priority":"high","reason":"surge"}`},
		{[]string{"-o", "json", "degrade", "--priority", "normal", "--reason", "late"}, "index", "/v1/admin/degrade", `{"priority":"normal","reason":"late"}`},
		{[]string{"degrade", "status"}, "status", "/v1/admin/degrade", ""},
		{[]string{"-o", "json", "degrade", "status"}, "json", "/v1/admin/degrade", ""},
		{[]string{"degrade", "status", "--json"}, "json", "/v1/admin/degrade", ""},
		{[]string{"degrade", "off"}, "degrade off\n", "/v1/admin/degrade/off", `{"reason":""}`},
		{[]string{"degrade", "off", "--reason", "recovered"}, "degrade off\n", "/v1/admin/degrade/off", `{"reason":"recovered"}`},
		{[]string{"degrade", "--reason", "recovered", "off"}, "degrade off\n", "/v1/admin/degrade/off", `{"reason":"recovered"}`},
		{[]string{"degrade", "off", "-o", "json"}, "index", "/v1/admin/degrade/off", `{"reason":""}`},
		{[]string{"degrade", "status"}, "status", "/v1/admin/degrade", ""},
	}
	for i, run := range runs {
		res := h.run(t, run.args...).expect(t, exitOK)
		switch run.stdout {
		case "index":
			if !index.MatchString(res.stdout) {
				t.Errorf("%q: stdout %q, want the applied index in JSON", run.args, res.stdout)
			}
		case "status":
			if want := statusTable(); res.stdout != want {
				t.Errorf("%q: stdout\n%s\nwant\n%s", run.args, res.stdout, want)
			}
		case "json":
			d, err := admin.Degrade(t.Context())
			if got := decodeJSON[api.DegradeState](t, res); err != nil || !reflect.DeepEqual(&got, d) {
				t.Errorf("%q: %+v, want %+v (%v)", run.args, got, d, err)
			}
		default:
			if res.stdout != run.stdout {
				t.Errorf("%q: stdout\n%s\nwant\n%s", run.args, res.stdout, run.stdout)
			}
		}
		reqs := tp.requests()
		if len(reqs) != i+1 {
			t.Fatalf("%q: %d requests in all, want %d", run.args, len(reqs), i+1)
		}
		got := reqs[i]
		body := ""
		if len(got.body) > 0 {
			var m map[string]any
			if err := json.Unmarshal(got.body, &m); err != nil {
				t.Fatalf("%q sent %q", run.args, got.body)
			}
			b, _ := json.Marshal(m)
			body = string(b)
		}
		if got.path != run.path || body != run.body {
			t.Errorf("%q sent %s %s %s, want %s %s", run.args, got.method, got.path, body, run.path, run.body)
		}
		if got.auth != "Bearer "+r.Admin {
			t.Errorf("%q: Authorization %q", run.args, got.auth)
		}
		if (got.method == http.MethodPost) != (got.requestID != "") {
			t.Errorf("%q: %s with X-Request-ID %q: writes carry one, reads none", run.args, got.method, got.requestID)
		}
	}
	if d, err := admin.Degrade(t.Context()); err != nil || d.Active || d.By != "root" {
		t.Fatalf("after the runs: %+v, %v", d, err)
	}
}

// TestAdmin_RetriesAWriteWhoseAnswerWasLost: the region applied a write
// but its answer never came back (the tap drops the connection after the
// node answered); pushctl says why it waits, sends the write again with
// the same request id, and the region answers it without applying it
// twice. (The client's retries in every case: appliance/api.)
func TestAdmin_RetriesAWriteWhoseAnswerWasLost(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 1)
	tp := newTap(t, r.Nodes[0].AdminURL, tapHooks{drop: func(n int, _ tapped) bool { return n == 0 }})
	h := harness{env: map[string]string{"PUSHD_ADMIN_URL": tp.url(), "PUSHD_ADMIN_TOKEN": r.Admin}}
	res := h.run(t, "nodes", "drain", "node0").expect(t, exitOK)
	if res.stdout != "node node0 draining: dispatch sends it no new devices and its connected devices are moving to other nodes\n" {
		t.Errorf("stdout %q", res.stdout)
	}
	if want := "pushctl: POST /v1/admin/nodes/node0/drain: connection closed before an answer; sending it again in 100ms (same request id)\n"; res.stderr != want {
		t.Errorf("stderr\n%s\nwant\n%s", res.stderr, want)
	}
	reqs := tp.requests()
	if len(reqs) != 2 || reqs[0].requestID == "" || reqs[1].requestID != reqs[0].requestID {
		t.Fatalf("attempts %+v: want two with one request id", reqs)
	}
	applied := 0
	for _, e := range r.Raft.Store(0).State().Audit {
		if e.RequestID == reqs[0].requestID {
			applied++
		}
	}
	if applied != 1 {
		t.Fatalf("the write was applied %d times", applied)
	}
}

// TestAdmin_RefusalsAreExplained: each refusal a region answers is said
// in words the operator can act on. The tap injects what a region does
// only when it fails (an internal error), and loses the answer of a write
// that generated a secret, so that its retry is refused as already
// applied.
func TestAdmin_RefusalsAreExplained(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 1)
	admin := r.as(0, r.Admin)
	admin.run(t, "app", "create", "shop").expect(t, exitOK)
	cases := []struct {
		h    harness
		args []string
		want string
	}{
		{r.as(0, ""), []string{"status"},
			"pushctl: status: admin token missing or unknown (set --admin-token or PUSHD_ADMIN_TOKEN)\n"},
		{r.as(0, r.Viewer), []string{"degrade", "--priority", "normal", "--reason", "x"},
			"pushctl: degrade: forbidden: this call needs the operator role; the token has viewer\n"},
		{admin, []string{"app", "delete", "nope", "--yes"},
			"pushctl: app delete nope: apply app.delete: app \"nope\": not found\n"},
		{admin, []string{"app", "create", "shop"},
			"pushctl: app create shop: apply app.create: app \"shop\" exists: conflict\n"},
		{admin, []string{"tunables", "set", "--queue-bytes", "10"},
			"pushctl: tunables set: queue_bytes must hold at least one frame (16384 bytes)\n"},
	}
	for _, tc := range cases {
		res := tc.h.run(t, tc.args...).expect(t, exitFailure)
		if res.stderr != tc.want || res.stdout != "" {
			t.Errorf("%q: stdout %q, stderr\n%q\nwant\n%q", tc.args, res.stdout, res.stderr, tc.want)
		}
	}

	lost := newTap(t, r.Nodes[0].AdminURL, tapHooks{drop: func(n int, _ tapped) bool { return n == 0 }})
	res := harness{env: map[string]string{"PUSHD_ADMIN_URL": lost.url(), "PUSHD_ADMIN_TOKEN": r.Admin}}.
		run(t, "app", "rotate-secret", "shop").expect(t, exitFailure)
	want := "pushctl: app rotate-secret shop: an earlier attempt of this request was applied, but its answer was lost on the way; " +
		"what it generated is not shown again: "
	if err := contains(res.stderr, want); err != nil || res.stdout != "" {
		t.Errorf("rotate-secret whose answer was lost: stdout %q: %v", res.stdout, err)
	}

	broken := newTap(t, r.Nodes[0].AdminURL, tapHooks{answer: func(int, tapped) (int, string, bool) {
		return http.StatusInternalServerError, `{"error":{"code":"internal","message":"boom"}}`, true
	}})
	res = harness{env: map[string]string{"PUSHD_ADMIN_URL": broken.url(), "PUSHD_ADMIN_TOKEN": r.Admin}}.run(t, "audit").expect(t, exitFailure)
	if want := "pushctl: audit: GET /v1/admin/audit: HTTP 500 internal: boom\n"; res.stderr != want || res.stdout != "" {
		t.Errorf("audit: stdout %q, stderr\n%q\nwant\n%q", res.stdout, res.stderr, want)
	}
}

// TestAdmin_OperationsDocCommandsRun runs every pushctl command line of
// docs/operations.md against a real region with TLS, as the runbook's
// regions run, so the runbook and the command tree cannot drift apart:
// each line parses and reaches the region, which applies it or, for the
// runbook's example nodes (bj-2, bj-3, …) that this region does not
// have, says they are not found. A line's --out directory (where tls
// issue writes) becomes a temporary one: the runbook's /etc paths are
// the host's.
func TestAdmin_OperationsDocCommandsRun(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	r := startTestRegionWith(t, 1, appliancetest.RegionOptions{TLS: true})
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, r.Raft.CA().CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	h := r.as(0, r.Admin)
	h.env["PUSHD_CA_FILE"] = caFile
	var lines []string
	for _, m := range regexp.MustCompile("(?m)^    (pushctl [^#\n]*)|`(pushctl [^`]*)`").FindAllStringSubmatch(string(doc), -1) {
		line := strings.TrimSpace(m[1] + m[2])
		// These are documented in docs/pushctl.md; the runbook only names
		// them.
		if !slices.Contains([]string{"pushctl", "pushctl token issue", "pushctl trace", "pushctl nodes wait"}, line) {
			lines = append(lines, line)
		}
	}
	if len(lines) < 15 {
		t.Fatalf("found only %d pushctl command lines in docs/operations.md: %q", len(lines), lines)
	}
	// The runbook's user and group lines go through the push API with
	// the app it created: its printed API key, once the node has applied
	// the new app (nodes follow the region's metadata asynchronously).
	push := harness{env: map[string]string{"PUSHD_PUSH_URL": r.Nodes[0].PushURL}}
	// What the one-node region has not got (the doc's other nodes, a
	// message it never saw) is an expected failure.
	absent := regexp.MustCompile(`not found|not a member of the region|no node holds an event`)
	for _, line := range lines {
		// The pushctl part of a shell line (pushctl nodes restart-plan | sh).
		for _, op := range []string{" | ", " > ", " && "} {
			line, _, _ = strings.Cut(line, op)
		}
		args := shellWords(t, line)[1:]
		for i := range args {
			if i > 0 && args[i-1] == "--out" {
				args[i] = filepath.Join(t.TempDir(), "out")
			}
		}
		if args[0] == "user" || args[0] == "group" {
			if push.env["PUSHD_API_KEY"] == "" {
				t.Fatalf("docs/operations.md: %s comes before an app create that gives it an API key", line)
			}
			poll.Until(t, 5*time.Second, func() error {
				if res := push.run(t, args...); res.code != exitOK {
					return fmt.Errorf("docs/operations.md: %s: exit %d\n%s", line, res.code, res.stderr)
				}
				return nil
			})
			continue
		}
		// Commands that watch (top) run until stopped.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res := h.runCtx(t, ctx, args...)
		cancel()
		if res.code != exitOK && (res.code != exitFailure || !absent.MatchString(res.stderr)) {
			t.Errorf("docs/operations.md: %s: exit %d\n%s", line, res.code, res.stderr)
		}
		if args[0] == "app" && args[1] == "create" && res.code == exitOK {
			push.env["PUSHD_APP"], push.env["PUSHD_API_KEY"] = args[2], kvRows(res.stdout)["API_KEY"]
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
