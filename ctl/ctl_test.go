package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/ctl/load"
)

// harness is one pushctl invocation's surroundings: a fake environment,
// stdin, and bench workers run in-process.
type harness struct {
	env           map[string]string
	stdin         string
	defaultConfig string
	worker        load.WorkFunc
}

type result struct {
	code           int
	stdout, stderr string
}

// syncBuffer is a bytes.Buffer safe for a command's goroutines and the
// test reading it while the command runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (h harness) newEnv(stdout, stderr io.Writer) *env {
	worker := h.worker
	if worker == nil {
		worker = load.Work
	}
	return &env{
		stdin:         strings.NewReader(h.stdin),
		stdout:        stdout,
		stderr:        stderr,
		getenv:        func(k string) string { return h.env[k] },
		defaultConfig: h.defaultConfig,
		worker:        worker,
	}
}

// run runs pushctl with args to completion.
func (h harness) run(t *testing.T, args ...string) result {
	t.Helper()
	return h.runCtx(t, context.Background(), args...)
}

func (h harness) runCtx(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	var stdout, stderr syncBuffer
	code := run(ctx, h.newEnv(&stdout, &stderr), append([]string{"pushctl"}, args...))
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// start runs pushctl in the background; stop cancels it and returns its
// result.
func (h harness) start(t *testing.T, args ...string) (stdout, stderr *syncBuffer, stop func() result, done <-chan struct{}) {
	t.Helper()
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	fin := make(chan struct{})
	var code int
	go func() {
		defer close(fin)
		code = run(ctx, h.newEnv(stdout, stderr), append([]string{"pushctl"}, args...))
	}()
	stop = func() result {
		cancel()
		select {
		case <-fin:
		case <-time.After(10 * time.Second):
			t.Fatal("pushctl did not stop within 10s of cancel")
		}
		return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
	}
	t.Cleanup(func() { cancel(); <-fin })
	return stdout, stderr, stop, fin
}

func (r result) expect(t *testing.T, code int) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	return r
}

// decodeJSON decodes the single JSON object on stdout.
func decodeJSON[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("stdout is not the expected JSON: %v\n%s", err, r.stdout)
	}
	if dec.More() {
		t.Fatalf("stdout holds more than one JSON value:\n%s", r.stdout)
	}
	return v
}

func contains(s, sub string) error {
	if strings.Contains(s, sub) {
		return nil
	}
	return fmt.Errorf("%q not in output:\n%s", sub, s)
}

func TestMain_UsageErrorsExit2WithHint(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		args   []string
		stderr []string
	}{
		{"no command", nil, []string{"missing command", "COMMANDS:", "Run 'pushctl --help'"}},
		{"unknown command", []string{"frobnicate"}, []string{`unknown command "frobnicate"`}},
		{"group without subcommand", []string{"token"}, []string{"missing command", "issue", "Run 'pushctl token --help'"}},
		{"unknown subcommand", []string{"bench", "nope"}, []string{`unknown command "nope"`, "Run 'pushctl bench --help'"}},
		{"unknown flag", []string{"push", "--nope"}, []string{"flag provided but not defined: -nope", "Run 'pushctl push --help'"}},
		{"bad duration", []string{"token", "issue", "--ttl", "soon"}, []string{"invalid value", "-ttl"}},
		{"bad output", []string{"token", "issue", "-o", "yaml", "--device", "d"}, []string{`-o "yaml": want table or json`}},
		{"stray argument", []string{"push", "--device", "d", "--data", "x", "extra"}, []string{"unexpected arguments"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := harness{}.run(t, tc.args...).expect(t, exitUsage)
			if r.stdout != "" {
				t.Errorf("usage error wrote to stdout:\n%s", r.stdout)
			}
			for _, want := range tc.stderr {
				if err := contains(r.stderr, want); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestMain_EveryCommandExits2OnAnUnknownFlag: every command of the tree
// (as completion lists it) refuses a flag it does not define with exit
// 2, the reason and its own help hint on stderr, and nothing on stdout.
func TestMain_EveryCommandExits2OnAnUnknownFlag(t *testing.T) {
	t.Parallel()
	tree, _ := completionTree(newApp(harness{}.newEnv(io.Discard, io.Discard)))
	leaves := 0
	for _, n := range tree {
		if len(n.cmds) > 0 || n.path == "" {
			continue
		}
		leaves++
		r := harness{}.run(t, append(strings.Fields(n.path), "--no-such-flag")...)
		if r.code != exitUsage || r.stdout != "" || !strings.Contains(r.stderr, "flag provided but not defined: -no-such-flag") ||
			!strings.Contains(r.stderr, "Run 'pushctl "+n.path+" --help'") {
			t.Errorf("pushctl %s --no-such-flag: exit %d, stdout %q, stderr %q; want exit %d with the reason and the hint",
				n.path, r.code, r.stdout, r.stderr, exitUsage)
		}
	}
	if leaves < 20 {
		t.Fatalf("only %d commands in the tree", leaves)
	}
}

func TestMain_HelpGoesToStdoutAndExits0(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"push", "--help"}, {"bench", "connect", "-h"}, {"token", "-h"}} {
		r := harness{}.run(t, args...).expect(t, exitOK)
		if !strings.Contains(r.stdout, "USAGE:") || r.stderr != "" {
			t.Errorf("%q: stdout %q, stderr %q", args, r.stdout, r.stderr)
		}
	}
	r := harness{}.run(t, "bench", "--help").expect(t, exitOK)
	if strings.Contains(r.stdout, "worker") {
		t.Errorf("bench help lists the internal worker command:\n%s", r.stdout)
	}
}

func TestFlagsFirst(t *testing.T) {
	t.Parallel()
	app := newApp(harness{}.newEnv(io.Discard, io.Discard))
	cases := []struct{ in, want string }{
		{"device show d -o json", "device show -o json -- d"},
		{"-o json device show d", "-o json device show -- d"},
		{"device show --json d --app a", "device show --json --app a -- d"},
		{"device show -- -odd", "device show -- -odd"},
		{"push --device d --data-file - extra", "push --device d --data-file - -- extra"},
		{"bench connect --rate -1 --conns 5", "bench connect --rate -1 --conns 5"},
		{"frob -x", "frob -x"},
		{"token", "token"},
	}
	for _, c := range cases {
		got := strings.Join(flagsFirst(app, append([]string{"pushctl"}, strings.Fields(c.in)...))[1:], " ")
		if got != c.want {
			t.Errorf("flagsFirst(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
