package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
)

// TestApp_Lifecycle drives one app through every app subcommand on a real
// region, and pushes with the credentials create printed.
func TestApp_Lifecycle(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 1)
	h := r.as(0, r.Admin)

	res := h.run(t, "app", "create", "shop", "--max-payload", "8192", "--rate", "5000", "--burst", "10000", "--business", "orders").expect(t, exitOK)
	created := kvRows(res.stdout)
	if created["APP"] != "shop" || created["KEY_ID"] != "k1" || created["API_KEY_ID"] != "key-1" ||
		len(created["SECRET_BASE64"]) < 40 || len(created["API_KEY"]) < 20 || len(created) != 5 {
		t.Fatalf("app create printed\n%s", res.stdout)
	}
	if err := contains(res.stderr, "the secret and API key are shown this once and never again: store them now"); err != nil {
		t.Error(err)
	}
	// The printed API key pushes, once the node has applied the new app
	// (nodes follow the region's metadata asynchronously).
	push := harness{env: map[string]string{"PUSHD_PUSH_URL": r.Nodes[0].PushURL, "PUSHD_APP": "shop", "PUSHD_API_KEY": created["API_KEY"]}}
	pushExits := func(code int) {
		t.Helper()
		poll.Until(t, 2*time.Second, func() error {
			if res := push.run(t, "push", "--device", "phone-1", "--business", "orders", "--data", "hi"); res.code != code {
				return fmt.Errorf("push with key %.6s…: exit %d, want %d: %s", push.env["PUSHD_API_KEY"], res.code, code, res.stderr)
			}
			return nil
		})
	}
	pushExits(exitOK)

	list := func() []string {
		t.Helper()
		rows := tableRows(h.run(t, "app", "list").expect(t, exitOK).stdout)
		if want := "APP KEY_IDS API_KEYS MAX_PAYLOAD RATE BURST BUSINESSES CLIENT_GROUPS CREATED"; strings.Join(rows[0], " ") != want {
			t.Fatalf("header %q", rows[0])
		}
		for _, row := range rows[1:] {
			if row[0] == "shop" {
				return row[:8] // without the creation time
			}
		}
		return nil
	}
	if got := strings.Join(list(), " "); got != "shop k1 key-1 8192 5000 10000 orders allow" {
		t.Fatalf("app list row %q", got)
	}
	apps := decodeJSON[map[string][]api.App](t, h.run(t, "app", "list", "-o", "json").expect(t, exitOK))["apps"]
	if len(apps) != 1 || apps[0].ID != "shop" || apps[0].Created.IsZero() || apps[0].MaxPayload != 8192 {
		t.Fatalf("app list JSON %+v", apps)
	}

	res = h.run(t, "app", "rotate-secret", "shop").expect(t, exitOK)
	if kv := kvRows(res.stdout); kv["APP"] != "shop" || kv["KEY_ID"] != "k2" || kv["SECRET_BASE64"] == created["SECRET_BASE64"] || len(kv["SECRET_BASE64"]) < 40 {
		t.Fatalf("rotate-secret printed\n%s", res.stdout)
	}
	if err := contains(res.stderr, "never again"); err != nil {
		t.Error(err)
	}

	// Only the limits given change.
	res = h.run(t, "app", "set-limits", "shop", "--rate", "20000").expect(t, exitOK)
	if want := "app shop limits: max_payload 8192, rate 20000, burst 10000, businesses orders\n"; res.stdout != want {
		t.Fatalf("stdout %q, want %q", res.stdout, want)
	}
	if got := strings.Join(list(), " "); got != "shop k2,k1 key-1 8192 20000 10000 orders allow" {
		t.Fatalf("after rotate-secret and set-limits: %q", got)
	}
	h.run(t, "app", "set-limits", "shop", "--any-business", "--max-payload", "0", "--burst", "0").expect(t, exitOK)
	if got := strings.Join(list(), " "); got != "shop k2,k1 key-1 default 20000 unlimited any allow" {
		t.Fatalf("after clearing limits: %q", got)
	}
	res = h.run(t, "app", "set-client-groups", "shop", "deny").expect(t, exitOK)
	if want := "app shop: devices' JOIN and LEAVE refused: its groups are its business's\n"; res.stdout != want {
		t.Fatalf("stdout %q, want %q", res.stdout, want)
	}
	h.run(t, "app", "set-client-groups", "shop", "maybe").expect(t, exitUsage)
	if got := strings.Join(list(), " "); got != "shop k2,k1 key-1 default 20000 unlimited any deny" {
		t.Fatalf("after set-client-groups deny: %q", got)
	}
	h.run(t, "app", "set-client-groups", "shop", "allow").expect(t, exitOK)

	res = h.run(t, "app", "add-key", "shop").expect(t, exitOK)
	added := kvRows(res.stdout)
	if added["API_KEY_ID"] != "key-2" || added["API_KEY"] == "" || added["API_KEY"] == created["API_KEY"] {
		t.Fatalf("add-key printed\n%s", res.stdout)
	}
	res = h.run(t, "app", "revoke-key", "shop", "key-1").expect(t, exitOK)
	if res.stdout != "app shop: API key key-1 revoked\n" {
		t.Fatalf("stdout %q", res.stdout)
	}
	if got := strings.Join(list(), " "); got != "shop k2,k1 key-2 default 20000 unlimited any allow" {
		t.Fatalf("after add-key and revoke-key: %q", got)
	}
	pushExits(exitFailure)
	push.env["PUSHD_API_KEY"] = added["API_KEY"]
	pushExits(exitOK)

	res = h.run(t, "app", "create", "shop").expect(t, exitFailure)
	if want := "pushctl: app create shop: apply app.create: app \"shop\" exists: conflict\n"; res.stderr != want {
		t.Errorf("duplicate create: stderr %q, want %q", res.stderr, want)
	}

	h.run(t, "app", "delete", "shop").expect(t, exitUsage)
	res = h.run(t, "app", "delete", "shop", "--yes").expect(t, exitOK)
	if res.stdout != "app shop deleted\n" {
		t.Fatalf("stdout %q", res.stdout)
	}
	if row := list(); row != nil {
		t.Fatalf("deleted app still listed: %q", row)
	}
	res = h.run(t, "app", "delete", "shop", "--yes").expect(t, exitFailure)
	if err := contains(res.stderr, `app "shop": not found`); err != nil {
		t.Error(err)
	}
}
