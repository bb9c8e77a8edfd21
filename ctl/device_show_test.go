package ctl

import (
	"fmt"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
)

func TestDeviceShow_TableAndJSON(t *testing.T) {
	t.Parallel()
	// Raw devices that send no PING: the idle limit must not cut them
	// however long a busy machine makes the test.
	node := startTestNode(t, true, func(c *appliance.Config) { c.HeartbeatInterval = time.Minute })
	connectDevice(t, node, "phone-1") // online, and acks nothing
	h := harness{env: testEnv(node.PushURL)}
	h.run(t, "push", "--device", "phone-1", "--data", "x").expect(t, exitOK)
	h.run(t, "push", "--device", "phone-1", "--data", "y").expect(t, exitOK)

	st, err := node.DeviceState(t.Context(), testApp, "phone-1")
	if err != nil || st.Route == nil {
		t.Fatalf("device state %+v, %v", st, err)
	}
	r := h.run(t, "device", "show", "phone-1").expect(t, exitOK)
	want := "APP          dev\n" +
		"DEVICE       phone-1\n" +
		"ONLINE       true\n" +
		"NODE         n1\n" +
		fmt.Sprintf("CONN_EPOCH   %d\n", st.Route.Epoch) +
		fmt.Sprintf("INBOX_EPOCH  %s\n", st.Epoch) +
		"LAST         2\n" +
		"ACKED        0\n" +
		"INBOX_LEN    2\n" +
		"LOST         0\n"
	if r.stdout != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
	// Flags after the device id work too, kubectl style.
	for _, args := range [][]string{{"-o", "json", "phone-1"}, {"phone-1", "-o", "json"}, {"phone-1", "--json"}, {"--json", "--", "phone-1"}} {
		got := decodeJSON[api.DeviceState](t, h.run(t, append([]string{"device", "show"}, args...)...).expect(t, exitOK))
		if got.Device != "phone-1" || got.Last != 2 || got.InboxLen != 2 || got.Route == nil || got.Route.Node != "n1" || got.Epoch != st.Epoch {
			t.Fatalf("%v: %+v", args, got)
		}
	}
}

func TestDeviceShow_Errors(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	h := harness{env: testEnv(node.PushURL)}
	r := h.run(t, "device", "show").expect(t, exitUsage)
	if err := contains(r.stderr, "missing DEVICE"); err != nil {
		t.Error(err)
	}
	r = h.run(t, "device", "show", "d", "e").expect(t, exitUsage)
	if err := contains(r.stderr, `want one DEVICE, got ["d" "e"]`); err != nil {
		t.Error(err)
	}
	r = harness{env: testEnv(node.PushURL + "/prefix")}.run(t, "device", "show", "d").expect(t, exitFailure)
	if err := contains(r.stderr, "device show d: GET /v1/devices/d: HTTP 404 not_found"); err != nil {
		t.Error(err)
	}
	env := testEnv(node.PushURL)
	env["PUSHD_API_KEY"] = "wrong-key-wrong-key"
	r = harness{env: env}.run(t, "device", "show", "d").expect(t, exitFailure)
	if err := contains(r.stderr, "device show d: GET /v1/devices/d: HTTP 401 unauthorized"); err != nil {
		t.Error(err)
	}
}
