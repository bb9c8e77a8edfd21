package bridge_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta"
)

// TestPushAPI_Regions checks the push API's "regions": every refusal is
// a 400 that changes nothing anywhere; this region's own name, or none,
// pushes here only; a region without a bridge knows only itself.
func TestPushAPI_Regions(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	alone := startRegion(t, "gz", nil, nil, func(o *regionOpts) { o.bridged = false })

	for _, c := range []struct {
		name    string
		via     *testRegion
		regions *api.Regions
		msg     string
	}{
		{"empty list", bj, api.RegionList(), "regions is empty"},
		{"unknown region", bj, api.RegionList("sh", "xa"), `unknown region "xa"; this region is bj and its bridge reaches sh`},
		{"a region twice", bj, api.RegionList("sh", "sh"), `regions lists "sh" more than once`},
		{"not a name", bj, api.RegionList("s h"), "is not a region name"},
		{"all in a list", bj, api.RegionList("all"), "is not a region name"},
		{"another region without a bridge", alone, api.RegionList("gz", "bj"), `"bj" is not this region (gz), which has no bridge`},
	} {
		_, err := pushVia(t, c.via, api.PushRequest{Devices: []string{"d1"}, Regions: c.regions})
		var ae *api.APIError
		if !errors.As(err, &ae) || ae.Status != 400 || ae.Code != "invalid_field" || !strings.Contains(ae.Message, c.msg) {
			t.Errorf("%s: %v, want 400 invalid_field saying %q", c.name, err, c.msg)
		}
	}
	// A string other than "all" is not a regions value at all.
	cl := bj.pushClient(t)
	var out api.PushResponse
	err := cl.Do(t.Context(), "POST", "/v1/push", nil, map[string]any{"app": testApp, "devices": []string{"d1"}, "data": "x", "regions": "sh"}, &out)
	if ae := (*api.APIError)(nil); !errors.As(err, &ae) || ae.Code != "bad_json" {
		t.Errorf(`"regions": "sh": %v, want 400 bad_json`, err)
	}
	if n := metric(t, bj, "pushd_bridge_exports_total"); n != 0 {
		t.Fatalf("refused pushes exported %v times", n)
	}
	if st := deviceState(t, bj, "d1"); st.Last != 0 {
		t.Fatalf("refused pushes stored %d messages", st.Last)
	}

	for _, c := range []struct {
		name    string
		via     *testRegion
		regions *api.Regions
	}{{"this region by name", bj, api.RegionList("bj")}, {"all without a bridge", alone, api.AllRegions()}, {"none", alone, nil}} {
		resp, err := pushVia(t, c.via, api.PushRequest{Devices: []string{"d2"}, Regions: c.regions})
		if err != nil || !resp.Stored || len(resp.Bridged) != 0 || len(resp.Results) != 1 {
			t.Errorf("%s: %+v, %v: want stored here, nothing bridged", c.name, resp, err)
		}
	}
	// For another region only: invalid ids are still answered one by one.
	resp := mustPushVia(t, bj, api.PushRequest{Devices: []string{"d3", "bad id"}, Regions: api.RegionList("sh")})
	if len(resp.Results) != 1 || resp.Results[0].Reason != "invalid_device" || resp.Stored || resp.Bridged["sh"] != api.BridgedQueued {
		t.Fatalf("answer %+v: want bad id rejected, nothing stored here, sh queued", resp)
	}
}

// TestPushAPI_UsersForOtherRegionsOnlyCountPerUser pushes to users for sh
// only through bj, whose app admits a burst of 2: bj cannot see the
// users' devices, so its rate limit counts one per user — three users
// could never pass (400), two pass, and two more at once are over the
// rate (429, until the bucket refills in 2 s) — and nothing is stored in
// bj.
func TestPushAPI_UsersForOtherRegionsOnlyCountPerUser(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs(), func(o *regionOpts) {
		o.commands = []raftmeta.Command{raftmeta.SetAppLimits(testApp, raftmeta.AppLimits{MaxPayload: 4096, RatePerSec: 1, Burst: 2})}
	})
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	phone := connectAs(t, sh, "alice-phone", profile{user: "alice"})

	_, err := pushVia(t, bj, api.PushRequest{Users: []string{"alice", "bob", "carol"}, Regions: api.RegionList("sh")})
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != 400 || ae.Code != "too_many_targets" || !strings.Contains(ae.Message, "3 users") {
		t.Fatalf("3 users with a burst of 2: %v, want 400 too_many_targets counting users", err)
	}
	resp := mustPushVia(t, bj, api.PushRequest{Users: []string{"alice", "bob"}, Regions: api.RegionList("sh")})
	if resp.Stored || len(resp.Results) != 0 || resp.Bridged["sh"] != api.BridgedQueued {
		t.Fatalf("answer %+v: want nothing here and sh queued", resp)
	}
	_, err = pushVia(t, bj, api.PushRequest{Users: []string{"alice", "bob"}, Regions: api.RegionList("sh")})
	if !errors.As(err, &ae) || ae.Status != 429 {
		t.Fatalf("2 more users at once: %v, want 429", err)
	}
	phone.waitIDs(t, within, []string{resp.ID})
}

// TestPushAPI_RefusedHereIsNotExported stops bj's Redis: a push for bj
// and sh to a device not connected to bj is refused with 503, and
// nothing reaches sh either, so the caller's retry cannot deliver it
// twice under two ids.
func TestPushAPI_RefusedHereIsNotExported(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	phone := connect(t, sh, "phone-1")
	bj.Redis.Stop()
	poll.Until(t, within, func() error {
		_, err := pushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("bj", "sh")})
		var ae *api.APIError
		if !errors.As(err, &ae) || ae.Status != 503 || ae.Code != "unavailable" {
			return fmt.Errorf("push answered %v, want 503 unavailable", err)
		}
		return nil
	})
	if n := metric(t, bj, "pushd_bridge_exports_total"); n != 0 {
		t.Fatalf("%v refused pushes were exported", n)
	}
	bj.Redis.Restart()
	mark := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh")})
	phone.waitIDs(t, within, []string{mark.ID})
}
