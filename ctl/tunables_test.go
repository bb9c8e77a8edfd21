package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/internal/poll"
)

func TestTunables_SetThenShow(t *testing.T) {
	t.Parallel()
	// pushd's default ack timings (10s, 60s), not appliancetest's short
	// ones: a 5s ack timeout must not be over the backoff maximum, or the
	// node would raise that too.
	r := startTestRegionWith(t, 1, appliancetest.RegionOptions{Config: func(_ int, c *appliance.Config) {
		c.AckTimeout, c.AckBackoffMax = 0, 0
	}})
	h := r.as(0, r.Admin)
	before := kvRows(h.run(t, "tunables", "show").expect(t, exitOK).stdout)
	for _, k := range []string{"ACK_TIMEOUT", "ACK_BACKOFF_MAX", "WINDOW", "QUEUE_FRAMES", "QUEUE_BYTES"} {
		if v := before[k]; v == "" || v == "-" || v == "0" {
			t.Fatalf("tunables show: %s is %q: %v", k, v, before)
		}
	}
	res := h.run(t, "tunables", "set", "--window", "32", "--ack-timeout", "5s").expect(t, exitOK)
	if res.stdout != "tunables set: ack-timeout 5s, window 32\n" {
		t.Fatalf("stdout %q", res.stdout)
	}
	poll.Until(t, 2*time.Second, func() error {
		now := decodeJSON[api.Tunables](t, h.run(t, "tunables", "show", "-o", "json").expect(t, exitOK))
		if now.InFlightWindow != 32 || now.AckTimeout != "5s" {
			return fmt.Errorf("after set: %+v", now)
		}
		if now.QueueFrames != atoi(t, before["QUEUE_FRAMES"]) || now.AckBackoffMax != before["ACK_BACKOFF_MAX"] {
			t.Fatalf("settings not given changed: %+v, before %v", now, before)
		}
		return nil
	})
	res = h.run(t, "tunables", "set", "--inbox-max-len", "50", "--inbox-ttl", "1h").expect(t, exitOK)
	if res.stdout != "tunables set: inbox-ttl 1h0m0s, inbox-max-len 50\n" {
		t.Fatalf("stdout %q", res.stdout)
	}
	poll.Until(t, 2*time.Second, func() error {
		kv := kvRows(h.run(t, "tunables", "show").expect(t, exitOK).stdout)
		if kv["INBOX_MAX_LEN"] != "50" || kv["INBOX_TTL"] != "1h0m0s" || kv["WINDOW"] != "32" {
			return fmt.Errorf("after the second set: %v", kv)
		}
		return nil
	})
	res = h.run(t, "tunables", "set", "--queue-bytes", "10").expect(t, exitFailure)
	if err := contains(res.stderr, "pushctl: tunables set: queue_bytes must hold at least one frame"); err != nil {
		t.Error(err)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	v, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
