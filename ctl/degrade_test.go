package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"fmt"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
)

// TestDegrade_ThroughAFollowerThenOff sets degrade through a follower's
// admin API (forwarded to the leader), sees it from every node, and lifts
// it.
func TestDegrade_ThroughAFollowerThenOff(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 3)
	li := r.leader(t)
	follower := (li + 1) % 3
	other := (li + 2) % 3

	res := r.as(follower, r.Admin).run(t, "degrade", "--priority", "normal", "--business", "ads", "--reason", "surge drill").expect(t, exitOK)
	if want := "degrade on: refusing low and normal priority pushes of ads\n"; res.stdout != want {
		t.Fatalf("stdout %q, want %q", res.stdout, want)
	}
	for i := range r.Nodes {
		poll.Until(t, 2*time.Second, func() error {
			kv := kvRows(r.as(i, r.Admin).run(t, "degrade", "status").expect(t, exitOK).stdout)
			if kv["DEGRADE"] != "on" {
				return fmt.Errorf("node %d: %v", i, kv)
			}
			if kv["PRIORITY"] != "normal" || kv["BUSINESSES"] != "ads" || kv["REASON"] != "surge drill" || kv["BY"] != "root" || kv["SINCE"] == "-" {
				t.Fatalf("node %d: degrade status %v", i, kv)
			}
			return nil
		})
	}
	kv := kvRows(r.as(other, r.Admin).run(t, "status").expect(t, exitOK).stdout)
	if kv["DEGRADE"] != "on" || kv["PRIORITY"] != "normal" || kv["REASON"] != "surge drill" {
		t.Fatalf("status degrade block %v", kv)
	}
	d := decodeJSON[api.DegradeState](t, r.as(other, r.Admin).run(t, "degrade", "status", "-o", "json").expect(t, exitOK))
	if !d.Active || d.Priority != "normal" || len(d.Businesses) != 1 || d.By != "root" || d.Since.IsZero() {
		t.Fatalf("degrade status JSON %+v", d)
	}

	res = r.as(other, r.Admin).run(t, "degrade", "off", "--reason", "drill over").expect(t, exitOK)
	if res.stdout != "degrade off\n" {
		t.Fatalf("stdout %q", res.stdout)
	}
	poll.Until(t, 2*time.Second, func() error {
		kv := kvRows(r.as(follower, r.Admin).run(t, "degrade", "status").expect(t, exitOK).stdout)
		if kv["DEGRADE"] != "off" || kv["REASON"] != "drill over" || kv["PRIORITY"] != "-" {
			return fmt.Errorf("after off: %v", kv)
		}
		return nil
	})
}
