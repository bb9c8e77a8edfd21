package bridge_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/tests/faultproxy"
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
	phone.waitIDs(t, within, ids)
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

// TestBridge_BroadcastToAllRegions broadcasts with regions "all": every
// connected device of the app in both regions gets it once; the answer
// counts bj's own recipients and says queued for sh.
func TestBridge_BroadcastToAllRegions(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	devices := []*device{connect(t, bj, "bj-1"), connect(t, bj, "bj-2"), connect(t, sh, "sh-1"), connect(t, sh, "sh-2")}

	resp := mustPushVia(t, bj, api.PushRequest{Broadcast: true, Regions: api.AllRegions()})
	if resp.Recipients == nil || *resp.Recipients != 2 || resp.Bridged["sh"] != api.BridgedQueued {
		t.Fatalf("answer %+v: want 2 recipients in bj and sh queued", resp)
	}
	for _, d := range devices {
		d.waitIDs(t, within, []string{resp.ID})
	}
	// sh fans out each broadcast once: a second record of it (a retry,
	// a redelivery) is recognised by id.
	poll.Until(t, within, func() error {
		if n := metric(t, sh, "pushd_bridge_consumed_records_total", "outcome=imported"); n != 1 {
			return fmt.Errorf("sh imported %v records, want 1", n)
		}
		return nil
	})
}

// TestBridge_FilteredBroadcastToAllRegions broadcasts with regions "all"
// and a filter of every kind of criterion: exactly the matching devices
// of both regions get it; in each region a device that fails one
// criterion does not. An unfiltered broadcast after it shows those were
// passed over, not late.
func TestBridge_FilteredBroadcastToAllRegions(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	match := profile{platform: "ios", version: "2.3.1", tags: []string{"vip"}}
	var matching, others []*device
	for _, r := range []*testRegion{bj, sh} {
		matching = append(matching, connectAs(t, r, r.name+"-match", match))
		others = append(others,
			connectAs(t, r, r.name+"-android", profile{platform: "android", version: "2.3.1", tags: []string{"vip"}}),
			connectAs(t, r, r.name+"-old", profile{platform: "ios", version: "1.9", tags: []string{"vip"}}),
			connectAs(t, r, r.name+"-untagged", profile{platform: "ios", version: "2.3.1"}))
	}
	filter := &api.Filter{Platforms: []string{"ios"}, Versions: []api.VersionMatch{{Min: api.Ptr("2.0")}}, Tags: []string{"vip"}}
	resp := mustPushVia(t, bj, api.PushRequest{Broadcast: true, Filter: filter, Regions: api.AllRegions()})
	if resp.Recipients == nil || *resp.Recipients != 1 || resp.Bridged["sh"] != api.BridgedQueued {
		t.Fatalf("answer %+v: want 1 recipient in bj and sh queued", resp)
	}
	mark := mustPushVia(t, bj, api.PushRequest{Broadcast: true, Regions: api.AllRegions()})
	for _, d := range matching {
		d.waitIDs(t, within, []string{resp.ID, mark.ID})
	}
	for _, d := range others {
		d.waitIDs(t, within, []string{mark.ID})
	}
}

// TestBridge_UserPushReachesDevicesInAnotherRegion pushes in bj to two
// users for both regions: each region reaches the devices its own user
// index has for them — alice's two devices in sh, bob's in bj — each
// stored once; bj answers alice as having no device there; a device of
// neither user gets nothing.
func TestBridge_UserPushReachesDevicesInAnotherRegion(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	alicePhone := connectAs(t, sh, "alice-phone", profile{user: "alice"})
	aliceTablet := connectAs(t, sh, "alice-tablet", profile{user: "alice"})
	bobPhone := connectAs(t, bj, "bob-phone", profile{user: "bob"})
	carol := connectAs(t, sh, "carol-phone", profile{user: "carol"})

	resp := mustPushVia(t, bj, api.PushRequest{Users: []string{"alice", "bob"}, Regions: api.AllRegions()})
	want := []api.PushResult{{User: "alice", Status: api.StatusRejected, Reason: "no_devices"},
		{User: "bob", Device: "bob-phone", Status: api.StatusDelivered, Seq: 1}}
	if resp.Bridged["sh"] != api.BridgedQueued || fmt.Sprint(resp.Results) != fmt.Sprint(want) {
		t.Fatalf("answer %+v: want bj's results %+v and sh queued", resp, want)
	}
	for _, d := range []*device{alicePhone, aliceTablet, bobPhone} {
		d.waitIDs(t, within, []string{resp.ID})
	}
	for _, id := range []string{"alice-phone", "alice-tablet"} {
		if st := deviceState(t, sh, id); st.Last != 1 {
			t.Fatalf("sh stored %d messages for %s, want 1", st.Last, id)
		}
	}
	// Only to sh now: bob has no device there, and bj stores nothing.
	again := mustPushVia(t, bj, api.PushRequest{Users: []string{"alice", "bob"}, Regions: api.RegionList("sh")})
	if again.Stored || len(again.Results) != 0 || again.Bridged["sh"] != api.BridgedQueued {
		t.Fatalf("answer %+v: want nothing here and sh queued", again)
	}
	alicePhone.waitIDs(t, within, []string{resp.ID, again.ID})
	mark := mustPushVia(t, bj, api.PushRequest{Broadcast: true, Regions: api.RegionList("sh")})
	carol.waitIDs(t, within, []string{mark.ID})
	if st := deviceState(t, bj, "bob-phone"); st.Last != 1 {
		t.Fatalf("bj stored %d messages for bob-phone, want 1", st.Last)
	}
}

// TestBridge_GroupPushReachesMembersInAnotherRegion pushes to a group in
// bj for sh only: sh's members get it, its non-members and bj's members
// do not.
func TestBridge_GroupPushReachesMembersInAnotherRegion(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	member, other, bjMember := connect(t, sh, "m-1"), connect(t, sh, "o-1"), connect(t, bj, "m-2")
	for _, d := range []*device{member, bjMember} {
		if err := d.c.Join(context.Background(), "room-7"); err != nil {
			t.Fatal(err)
		}
	}
	resp := mustPushVia(t, bj, api.PushRequest{Group: api.Ptr("room-7"), Regions: api.RegionList("sh")})
	if resp.Recipients != nil || resp.Bridged["sh"] != api.BridgedQueued {
		t.Fatalf("answer %+v: want no local recipients (sh only) and sh queued", resp)
	}
	member.waitIDs(t, within, []string{resp.ID})
	// A later broadcast to sh shows the others were passed over, not late.
	mark := mustPushVia(t, bj, api.PushRequest{Broadcast: true, Regions: api.RegionList("sh")})
	other.waitIDs(t, within, []string{mark.ID})
	if got := bjMember.ids(); len(got) != 0 {
		t.Fatalf("bj's member got %v: the push was for sh", got)
	}
}

// TestBridge_GroupWithStreamInAnotherRegion pushes in bj, for sh, to a
// group that sh keeps in Redis with a catch-up stream and a user as its
// member: the user's device in sh gets it, and sh's stream holds it once
// though the record is read twice (a retry under the same idempotency
// key exports it again).
func TestBridge_GroupWithStreamInAnotherRegion(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	ctx := context.Background()
	shAPI := sh.pushClient(t)
	if _, err := shAPI.SetGroupStream(ctx, "room-9", &api.GroupStreamRequest{App: api.Ptr(testApp), MaxLen: api.Ptr(int64(100)), MaxAge: api.Ptr("1h")}); err != nil {
		t.Fatal(err)
	}
	if _, err := shAPI.ChangeGroupMembers(ctx, "room-9", &api.GroupMembersRequest{App: api.Ptr(testApp), Op: api.Ptr(api.OpAdd), Users: []string{"alice"}}); err != nil {
		t.Fatal(err)
	}
	phone := connectAs(t, sh, "alice-phone", profile{user: "alice"})

	req := api.PushRequest{Group: api.Ptr("room-9"), IdempotencyKey: api.Ptr("notice-1"), Regions: api.RegionList("sh")}
	first := mustPushVia(t, bj, req)
	retry := mustPushVia(t, bj, req)
	if retry.ID != first.ID || first.Bridged["sh"] != api.BridgedQueued || retry.Bridged["sh"] != api.BridgedQueued {
		t.Fatalf("answers %+v and %+v: want one id, sh queued twice", first, retry)
	}
	phone.waitIDs(t, within, []string{first.ID})
	poll.Until(t, within, func() error {
		if n := metric(t, sh, "pushd_bridge_consumed_records_total", "outcome=repeat"); n != 1 {
			return fmt.Errorf("sh took %v records for repeats, want the retry's 1", n)
		}
		return nil
	})
	st, err := shAPI.Group(ctx, testApp, "room-9", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Stream.Last != 1 {
		t.Fatalf("sh's stream of room-9 %+v: want the message appended once", st.Stream)
	}
	if got := phone.ids(); len(got) != 1 {
		t.Fatalf("the member got %v, want the message once", got)
	}
}

// TestBridge_IdempotentRetryInEitherRegion pushes to a device of each
// region for both regions with an idempotency key, and sends the same
// request again through the other region: one message id, one seq in
// each inbox, each device's app handed it once. Once after the first
// push was delivered everywhere, once straight away, racing its import.
func TestBridge_IdempotentRetryInEitherRegion(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	inBJ, inSH := connect(t, bj, "phone-bj"), connect(t, sh, "phone-sh")
	both := api.RegionList("bj", "sh")
	req := func(key string) api.PushRequest {
		return api.PushRequest{Devices: []string{"phone-bj", "phone-sh"}, Regions: both, IdempotencyKey: api.Ptr(key)}
	}

	first := mustPushVia(t, bj, req("order-1"))
	inBJ.waitIDs(t, within, []string{first.ID})
	inSH.waitIDs(t, within, []string{first.ID})
	again := mustPushVia(t, sh, req("order-1"))
	if again.ID != first.ID {
		t.Fatalf("the retry in sh got id %s, the push in bj %s", again.ID, first.ID)
	}
	for _, r := range again.Results {
		if !r.Duplicate || r.Seq != 1 {
			t.Fatalf("retry in sh: %+v, want duplicate of seq 1 (the import stored it)", r)
		}
	}

	second := mustPushVia(t, sh, req("order-2"))
	mustPushVia(t, bj, req("order-2"))
	want := []string{first.ID, second.ID}
	inBJ.waitIDs(t, within, want)
	inSH.waitIDs(t, within, want)
	for _, r := range []*testRegion{bj, sh} {
		for _, d := range []string{"phone-bj", "phone-sh"} {
			poll.Until(t, within, func() error {
				if st := deviceState(t, r, d); st.Last != 2 {
					return fmt.Errorf("%s's inbox of %s assigned %d seqs, want 2", r.name, d, st.Last)
				}
				return nil
			})
		}
	}
	for _, d := range []*device{inBJ, inSH} {
		if err := sameSet(d.ids(), want); err != nil {
			t.Fatalf("%s: %v", d.id, err)
		}
	}
}

// TestBridge_DeviceMovesBetweenRegions pushes to a device for every
// region while it moves from bj to sh (its connection drops; its
// dispatch now names sh) and back: its app is handed every message
// exactly once. Each region stored every message, so what the device had
// not received before it moved is in the inbox of the region it moved
// to; what it had already is dropped by the SDK as a repeat of its id.
func TestBridge_DeviceMovesBetweenRegions(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	// The device reaches bj through a proxy the test cuts: the phone's
	// network changed.
	toBJ := faultproxy.Start(t, strings.TrimPrefix(bj.node().TCPURL, "tcp://"))
	var where atomic.Pointer[string]
	where.Store(api.Ptr("tcp://" + toBJ.Addr()))
	mover := connectVia(t, "mover", "bj", func(context.Context, string) (string, error) { return *where.Load(), nil })

	var (
		mu  sync.Mutex
		ids []string
	)
	pushes := func(via *testRegion, n int) {
		for i := range n {
			resp := mustPushVia(t, via, api.PushRequest{Devices: []string{"mover"}, Regions: api.AllRegions(),
				Data: api.Ptr(fmt.Sprintf("%s-%d", via.name, i))})
			mu.Lock()
			ids = append(ids, resp.ID)
			mu.Unlock()
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pushes(bj, 40)
		pushes(sh, 40)
	}()
	poll.Until(t, within, func() error {
		if n := len(mover.ids()); n < 10 {
			return fmt.Errorf("%d messages in bj so far", n)
		}
		return nil
	})
	// The WELCOMEs so far were bj's; the next is sh's first. (A busy
	// machine can make the device reconnect more than once, to bj before
	// or to sh after: a later WELCOME of sh rightly says recovered.)
	inBJ := len(mover.welcomesSeen())
	where.Store(api.Ptr(sh.node().DeviceURL()))
	toBJ.Close()
	poll.Until(t, within, func() error {
		if ws := mover.welcomesSeen(); len(ws) <= inBJ {
			return fmt.Errorf("%d WELCOMEs: not reconnected to sh yet", len(ws))
		}
		return nil
	})
	<-done
	mu.Lock()
	want := append([]string(nil), ids...)
	mu.Unlock()
	mover.waitIDs(t, 15*time.Second, want)
	if first := mover.welcomesSeen()[inBJ]; first.Recovered {
		t.Errorf("WELCOME in sh says recovered: the device's cursor was bj's inbox, so sh cannot prove continuity")
	}
	// And back to bj: its inbox there holds everything too.
	var more []string
	where.Store(api.Ptr(bj.node().DeviceURL()))
	mover.c.Close()
	back := connectVia(t, "mover", "bj", func(context.Context, string) (string, error) { return bj.node().DeviceURL(), nil })
	for i := range 5 {
		more = append(more, mustPushVia(t, sh, api.PushRequest{Devices: []string{"mover"}, Regions: api.AllRegions(),
			Data: api.Ptr(fmt.Sprint("late-", i))}).ID)
	}
	poll.Until(t, within, func() error {
		for _, id := range more {
			if !slices.Contains(back.ids(), id) {
				return fmt.Errorf("%s not received back in bj", id)
			}
		}
		return nil
	})
}

// TestBridge_ThreeRegionsDoNotLoop broadcasts and pushes for all from
// bj with three regions on one Kafka: each region's devices get each
// message once, and only bj produced records: an imported message is
// never exported again.
func TestBridge_ThreeRegionsDoNotLoop(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	names := []string{"bj", "sh", "gz"}
	var regions []*testRegion
	var devices []*device
	for _, name := range names {
		var peers []string
		for _, p := range names {
			if p != name {
				peers = append(peers, p)
			}
		}
		r := startRegion(t, name, peers, kafka.ListenAddrs())
		regions = append(regions, r)
		devices = append(devices, connect(t, r, "d-"+name))
	}
	bj := regions[0]
	var want []string
	want = append(want, mustPushVia(t, bj, api.PushRequest{Broadcast: true, Regions: api.AllRegions()}).ID)
	want = append(want, mustPushVia(t, bj, api.PushRequest{Devices: []string{"d-bj", "d-sh", "d-gz"}, Regions: api.AllRegions()}).ID)
	for _, d := range devices {
		d.waitIDs(t, within, want)
	}
	// Every record is for sh and gz: counted once per region.
	bjRecords := metric(t, bj, "pushd_bridge_produced_records_total", "region=sh", "result=ok")
	// Once sh and gz consumed all of bj's records, a loop would show as
	// records on their topics.
	for _, r := range regions[1:] {
		poll.Until(t, within, func() error {
			if n := metric(t, r, "pushd_bridge_consumed_records_total", "topic=pushd-bridge.bj"); n != bjRecords {
				return fmt.Errorf("%s consumed %v of bj's %v records", r.name, n, bjRecords)
			}
			return nil
		})
		if n := metric(t, r, "pushd_bridge_exports_total"); n != 0 {
			t.Fatalf("%s exported %v pushes: it only imported", r.name, n)
		}
	}
	cl := rawClient(t, kafka)
	for _, name := range names {
		var total int64
		for p := range int32(4) {
			total += endOffset(t, cl, "pushd-bridge."+name, p)
		}
		if want := map[bool]int64{true: int64(bjRecords), false: 0}[name == "bj"]; total != want {
			t.Fatalf("topic pushd-bridge.%s holds %d records, want %d (bj produced %v)", name, total, want, bjRecords)
		}
	}
	for _, d := range devices {
		if err := sameSet(d.ids(), want); err != nil {
			t.Fatalf("%s: %v", d.id, err)
		}
	}
}
