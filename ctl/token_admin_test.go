package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
)

// TestTokenAdmin_RolesAndAudit creates admin tokens with pushctl, uses
// them within and beyond their roles, and finds every write in the audit
// log under the token that made it.
func TestTokenAdmin_RolesAndAudit(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 1)
	root := r.as(0, r.Admin)

	res := root.run(t, "token", "create-admin", "reader", "--role", "viewer").expect(t, exitOK)
	viewer := strings.TrimSpace(res.stdout)
	if strings.Count(res.stdout, "\n") != 1 || viewer == "" || strings.ContainsAny(viewer, " \t") {
		t.Fatalf("create-admin table output is not the token alone: %q", res.stdout)
	}
	if err := contains(res.stderr, "the viewer token reader is shown this once and never again"); err != nil {
		t.Error(err)
	}
	created := decodeJSON[api.AdminTokenCreated](t, root.run(t, "token", "create-admin", "ops", "--role", "operator", "-o", "json").expect(t, exitOK))
	if created.ID != "ops" || created.Role != "operator" || created.Token == "" {
		t.Fatalf("create-admin JSON %+v", created)
	}
	operator := created.Token

	// Nodes follow the region's metadata asynchronously: wait until the
	// node knows the new tokens.
	poll.Until(t, 2*time.Second, func() error {
		if res := r.as(0, viewer).run(t, "status"); res.code != exitOK {
			return fmt.Errorf("viewer status: exit %d: %s", res.code, res.stderr)
		}
		return nil
	})
	res = r.as(0, viewer).run(t, "degrade", "--priority", "normal", "--reason", "x").expect(t, exitFailure)
	if want := "pushctl: degrade: forbidden: this call needs the operator role; the token has viewer\n"; res.stderr != want {
		t.Errorf("viewer degrade: stderr %q, want %q", res.stderr, want)
	}
	res = r.as(0, viewer).run(t, "token", "list-admin").expect(t, exitFailure)
	if err := contains(res.stderr, "forbidden: this call needs the admin role; the token has viewer"); err != nil {
		t.Error(err)
	}
	for _, tok := range []string{"", "not-a-token"} {
		res = r.as(0, tok).run(t, "status").expect(t, exitFailure)
		if want := "pushctl: status: admin token missing or unknown (set --admin-token or PUSHD_ADMIN_TOKEN)\n"; res.stderr != want {
			t.Errorf("token %q: stderr %q, want %q", tok, res.stderr, want)
		}
	}
	poll.Until(t, 2*time.Second, func() error {
		if res := r.as(0, operator).run(t, "nodes", "drain", "node0"); res.code != exitOK {
			return fmt.Errorf("operator drain: exit %d: %s", res.code, res.stderr)
		}
		return nil
	})
	r.as(0, operator).run(t, "nodes", "drain", "node0", "--off").expect(t, exitOK)

	out := root.run(t, "token", "list-admin").expect(t, exitOK).stdout
	var listed []string
	for _, row := range tableRows(out) {
		listed = append(listed, strings.Join(row[:2], " "))
	}
	if got := strings.Join(listed, ", "); got != "ID ROLE, ops operator, reader viewer, root admin, watcher viewer" {
		t.Fatalf("list-admin rows %q:\n%s", got, out)
	}
	res = root.run(t, "token", "revoke-admin", "reader").expect(t, exitOK)
	if res.stdout != "admin token reader revoked\n" {
		t.Fatalf("stdout %q", res.stdout)
	}
	poll.Until(t, 2*time.Second, func() error {
		if res := r.as(0, viewer).run(t, "status"); res.code != exitFailure || !strings.Contains(res.stderr, "admin token missing or unknown") {
			return fmt.Errorf("revoked token: exit %d: %s", res.code, res.stderr)
		}
		return nil
	})
	res = root.run(t, "token", "revoke-admin", "root").expect(t, exitFailure)
	if want := "pushctl: token revoke-admin root: a token cannot revoke itself; use another admin token\n"; res.stderr != want {
		t.Errorf("self-revoke: stderr %q, want %q", res.stderr, want)
	}

	// The audit log: newest last, each write under its token's id, with
	// the request id pushctl sent.
	out = r.as(0, operator).run(t, "audit", "--limit", "5").expect(t, exitOK).stdout
	rows := tableRows(out)
	if want := "TIME ACTOR OP TARGET REQUEST WHAT"; strings.Join(rows[0], " ") != want {
		t.Fatalf("header %q", rows[0])
	}
	var got []string
	for _, row := range rows[1:] {
		if _, err := time.Parse(time.RFC3339, row[0]); err != nil || len(row[4]) < 16 || len(row) < 6 {
			t.Errorf("row %q: want an RFC 3339 time, a request id and what was set", row)
		}
		got = append(got, strings.Join(row[1:4], " "))
	}
	want := []string{
		"root admin-token.create reader",
		"root admin-token.create ops",
		"ops member.drain node0",
		"ops member.drain node0",
		"root admin-token.revoke reader",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	entries := decodeJSON[map[string][]api.AuditEntry](t, root.run(t, "audit", "--limit", "0", "-o", "json").expect(t, exitOK))["entries"]
	if len(entries) < 6 || entries[len(entries)-1].Op != "admin-token.revoke" || entries[len(entries)-1].Index <= entries[0].Index {
		t.Fatalf("audit JSON: %+v", entries)
	}
}
