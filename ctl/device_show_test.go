package ctl

import (
	"testing"

	"github.com/pushd/pushd/appliance/api"
)

func TestDeviceShow_TableAndJSON(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	fake.deliver = func(string, string, uint64, []byte) bool { return true }
	fake.ackAfter = -1
	h := harness{env: testEnv(fake.url())}
	h.run(t, "push", "--device", "phone-1", "--data", "x").expect(t, exitOK)
	h.run(t, "push", "--device", "phone-1", "--data", "y").expect(t, exitOK)

	r := h.run(t, "device", "show", "phone-1").expect(t, exitOK)
	want := "APP          dev\n" +
		"DEVICE       phone-1\n" +
		"ONLINE       true\n" +
		"NODE         n1\n" +
		"CONN_EPOCH   3\n" +
		"INBOX_EPOCH  e1\n" +
		"LAST         2\n" +
		"ACKED        0\n" +
		"INBOX_LEN    2\n" +
		"LOST         0\n"
	if r.stdout != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
	// Flags after the device id work too, kubectl style.
	for _, args := range [][]string{{"-o", "json", "phone-1"}, {"phone-1", "-o", "json"}, {"phone-1", "--json"}, {"--json", "--", "phone-1"}} {
		st := decodeJSON[api.DeviceState](t, h.run(t, append([]string{"device", "show"}, args...)...).expect(t, exitOK))
		if st.Device != "phone-1" || st.Last != 2 || st.InboxLen != 2 || st.Route == nil || st.Route.Node != "n1" {
			t.Fatalf("%v: %+v", args, st)
		}
	}
}

func TestDeviceShow_Errors(t *testing.T) {
	t.Parallel()
	fake := newFakePushAPI(t)
	h := harness{env: testEnv(fake.url())}
	r := h.run(t, "device", "show").expect(t, exitUsage)
	if err := contains(r.stderr, "missing DEVICE"); err != nil {
		t.Error(err)
	}
	r = h.run(t, "device", "show", "d", "e").expect(t, exitUsage)
	if err := contains(r.stderr, `want one DEVICE, got ["d" "e"]`); err != nil {
		t.Error(err)
	}
	env := testEnv(fake.url() + "/prefix")
	r = harness{env: env}.run(t, "device", "show", "d").expect(t, exitFailure)
	if err := contains(r.stderr, "device show d: GET /v1/devices/d: HTTP 404 not_found"); err != nil {
		t.Error(err)
	}
}
