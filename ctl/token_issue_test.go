package ctl

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/token"
)

func TestTokenIssue_TableIsTheTokenAndItVerifies(t *testing.T) {
	t.Parallel()
	h := harness{env: testEnv("")}
	r := h.run(t, "token", "issue", "--device", "phone-1", "--user", "u7", "--ttl", "2h").expect(t, exitOK)
	tok := strings.TrimSpace(r.stdout)
	if strings.Count(r.stdout, "\n") != 1 || strings.ContainsAny(tok, " \t") {
		t.Fatalf("table output is not one token line: %q", r.stdout)
	}
	c, err := token.Verify(tok, testKeys{}, testApp, "phone-1", time.Now())
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	if c.User != "u7" || c.KeyID != testKeyID {
		t.Fatalf("claims %+v", c)
	}
	if left := time.Until(time.Unix(c.Expires, 0)); left < 2*time.Hour-time.Minute || left > 2*time.Hour+time.Minute {
		t.Fatalf("expires in %s, want 2h", left)
	}
}

func TestTokenIssue_JSON(t *testing.T) {
	t.Parallel()
	h := harness{env: testEnv("")}
	for _, flag := range [][]string{{"-o", "json"}, {"--json"}} {
		args := append([]string{"token", "issue", "--device", "d1"}, flag...)
		out := decodeJSON[tokenIssued](t, h.run(t, args...).expect(t, exitOK))
		if out.App != testApp || out.Device != "d1" || out.Token == "" {
			t.Fatalf("%v: %+v", flag, out)
		}
		exp, err := time.Parse(time.RFC3339, out.Expires)
		if err != nil || time.Until(exp) > time.Hour+time.Minute || time.Until(exp) < 58*time.Minute {
			t.Fatalf("expires %q (%v), want about an hour from now", out.Expires, err)
		}
	}
	out := decodeJSON[tokenIssued](t, h.run(t, "token", "issue", "--device", "d1", "--tag", "vip", "--tag", "beta", "--json").expect(t, exitOK))
	c, err := token.Verify(out.Token, testKeys{}, testApp, "d1", time.Now())
	if err != nil || strings.Join(c.Tags, ",") != "vip,beta" || strings.Join(out.Tags, ",") != "vip,beta" {
		t.Fatalf("tags: claims %+v (%v), output %+v", c, err, out)
	}
	// -o json given before the command name works too.
	decodeJSON[tokenIssued](t, h.run(t, "-o", "json", "token", "issue", "--device", "d1").expect(t, exitOK))
}

func TestTokenIssue_NotBeforeShiftsTheWindow(t *testing.T) {
	t.Parallel()
	nbf := time.Now().Add(3 * time.Hour).Truncate(time.Second)
	r := harness{env: testEnv("")}.run(t, "token", "issue", "--device", "d1", "--ttl", "24h",
		"--not-before", nbf.Format(time.RFC3339), "-o", "json").expect(t, exitOK)
	out := decodeJSON[tokenIssued](t, r)
	if _, err := token.Verify(out.Token, testKeys{}, testApp, "d1", time.Now()); !errors.Is(err, token.ErrNotYetValid) {
		t.Fatalf("before its window: %v, want ErrNotYetValid", err)
	}
	if _, err := token.Verify(out.Token, testKeys{}, testApp, "d1", nbf.Add(time.Hour)); err != nil {
		t.Fatalf("inside its window: %v", err)
	}
	if out.NotBefore != nbf.UTC().Format(time.RFC3339) || out.Expires != nbf.Add(24*time.Hour).UTC().Format(time.RFC3339) {
		t.Fatalf("window %s .. %s", out.NotBefore, out.Expires)
	}
}

func TestTokenIssue_RefusesWhatServersRefuse(t *testing.T) {
	t.Parallel()
	h := harness{env: testEnv("")}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--device", "d", "--ttl", "25h"}, "at most 24h"},
		{[]string{"--device", "d", "--ttl", "0s"}, "more than 0"},
		{[]string{}, "missing --device"},
		{[]string{"--device", "bad id"}, "device id"},
		{[]string{"--device", "d", "--not-before", "tomorrow"}, "--not-before"},
		{[]string{"--device", "d", "--secret-base64", "c2hvcnQ="}, "secret is 5 bytes"},
		{[]string{"--device", "d", "--secret-base64", "!!"}, "not valid base64"},
	}
	for _, tc := range cases {
		r := h.run(t, append([]string{"token", "issue"}, tc.args...)...).expect(t, exitUsage)
		if err := contains(r.stderr, tc.want); err != nil {
			t.Errorf("%v: %v", tc.args, err)
		}
	}
}
