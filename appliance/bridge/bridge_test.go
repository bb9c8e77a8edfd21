package bridge_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/api"
)

// TestBridge_DevicePushReachesAnotherRegion pushes in bj for a device
// connected in sh: the answer says queued for sh, nothing is stored in
// bj, and the device gets every message once, in the order pushed.
func TestBridge_DevicePushReachesAnotherRegion(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	phone := connect(t, sh, "phone-1")

	var ids []string
	for i := range 20 {
		resp := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Data: api.Ptr(fmt.Sprint(i)),
			Regions: api.RegionList("sh")})
		if resp.Bridged["sh"] != api.BridgedQueued || len(resp.Bridged) != 1 || resp.Stored || len(resp.Results) != 0 {
			t.Fatalf("answer %+v: want bridged sh queued, nothing stored here", resp)
		}
		ids = append(ids, resp.ID)
	}
	phone.waitIDs(t, 10*time.Second, ids)
	if got := phone.ids(); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("order: got %v, pushed %v", got, ids)
	}
	if st := deviceState(t, bj, "phone-1"); st.Last != 0 {
		t.Fatalf("bj stored %d messages for phone-1; the push was for sh only", st.Last)
	}
	if st := deviceState(t, sh, "phone-1"); st.Last != 20 {
		t.Fatalf("sh's inbox of phone-1 assigned %d seqs, want 20", st.Last)
	}
}
