package pushapi_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta"
)

// Users, groups, catch-up streams, filters and businesses, on regions of
// real nodes (real Raft, one real redis-server) with the Go SDK as the
// devices.

// startGroupRegion starts a region of size nodes with the test app.
func startGroupRegion(t *testing.T, size int) *appliancetest.Region {
	t.Helper()
	app := raftmeta.App{ID: testApp, Secrets: []raftmeta.Secret{{KeyID: "k1", Secret: testSecret}},
		APIKeys: []raftmeta.APIKey{{ID: "key-1", Hash: raftmeta.HashKey(testAPIKey)}}}
	return appliancetest.StartRegion(t, size, appliancetest.RegionOptions{
		Commands: []raftmeta.Command{raftmeta.CreateApp(app)},
	})
}

// dev is a device of the test app run by the SDK.
type dev struct {
	id     string
	c      *client.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	msgs     []client.Message
	catchUps []client.CatchUp
	cursors  map[string]client.GroupCursor
	welcomes []client.Welcome
	gaps     int
}

// devOpts describe a device's session: its token's user and tags, its
// HELLO's platform, version and businesses, and the group cursors it
// resumes with.
type devOpts struct {
	user, platform, version string
	tags, businesses        []string
	cursors                 []client.GroupCursor
}

// runDev connects id to url with o and waits for its WELCOME; it stops
// with the test, or with stop.
func runDev(t *testing.T, url, id string, o devOpts) *dev {
	t.Helper()
	d := &dev{id: id, done: make(chan struct{}), cursors: map[string]client.GroupCursor{}}
	c, err := client.New(client.Config{
		URL: url, App: testApp, Device: id, Platform: o.platform, Version: o.version, Businesses: o.businesses,
		TokenFunc: func(context.Context) (string, error) {
			return token.Issue(token.Claims{App: testApp, Device: id, User: o.user, Tags: o.tags, KeyID: "k1",
				Expires: time.Now().Add(time.Hour).Unix()}, testSecret)
		},
		GroupCursors: o.cursors,
		BackoffMin:   20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		OnMessage:     func(m client.Message) { d.mu.Lock(); d.msgs = append(d.msgs, m); d.mu.Unlock() },
		OnCatchUp:     func(cu client.CatchUp) { d.mu.Lock(); d.catchUps = append(d.catchUps, cu); d.mu.Unlock() },
		OnGroupCursor: func(g client.GroupCursor) { d.mu.Lock(); d.cursors[g.Group] = g; d.mu.Unlock() },
		OnWelcome:     func(w client.Welcome) { d.mu.Lock(); d.welcomes = append(d.welcomes, w); d.mu.Unlock() },
		OnGap:         func(from, to uint64) { d.mu.Lock(); d.gaps += int(to - from + 1); d.mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	d.c = c
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() {
		defer close(d.done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(d.stop)
	poll.Until(t, 10*time.Second, func() error {
		if !c.Connected() {
			return fmt.Errorf("%s not connected", id)
		}
		return nil
	})
	return d
}

func (d *dev) stop() {
	d.cancel()
	<-d.done
}

func (d *dev) messages() []client.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.msgs)
}

func (d *dev) payloads() []string {
	var out []string
	for _, m := range d.messages() {
		out = append(out, string(m.Payload))
	}
	return out
}

// waitPayloads waits until d has received exactly want, in order.
func (d *dev) waitPayloads(t *testing.T, want ...string) {
	t.Helper()
	poll.Until(t, 10*time.Second, func() error {
		if got := d.payloads(); !slices.Equal(got, want) {
			return fmt.Errorf("%s received %q, want %q", d.id, got, want)
		}
		return nil
	})
}

func (d *dev) lastCatchUp(t *testing.T, group string) client.CatchUp {
	t.Helper()
	var cu client.CatchUp
	poll.Until(t, 10*time.Second, func() error {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, c := range d.catchUps {
			if c.Group == group {
				cu = c
				return nil
			}
		}
		return fmt.Errorf("%s got no CATCHUP of %s (got %+v)", d.id, group, d.catchUps)
	})
	return cu
}

func (d *dev) groupCursor(group string) client.GroupCursor {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cursors[group]
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustPushReq(t *testing.T, n *appliancetest.Node, req api.PushRequest) *api.PushResponse {
	t.Helper()
	req.App = api.Ptr(testApp)
	resp, err := pushClient(t, n, testAPIKey).Push(ctxT(t), &req)
	if err != nil {
		t.Fatalf("push %+v: %v", req, err)
	}
	return resp
}

func changeMembers(t *testing.T, n *appliancetest.Node, group, op string, devices, users []string) *api.GroupMembersResponse {
	t.Helper()
	resp, err := pushClient(t, n, testAPIKey).ChangeGroupMembers(ctxT(t), group,
		&api.GroupMembersRequest{App: api.Ptr(testApp), Op: api.Ptr(op), Devices: devices, Users: users})
	if err != nil {
		t.Fatalf("%s %v %v in %s: %v", op, devices, users, group, err)
	}
	return resp
}

// A push to a user reaches every device the user connected with, on
// different nodes, through their inboxes: delivered to the online ones,
// stored for the offline one until it connects; each once in the app.
func TestUsers_PushReachesEveryDeviceOnTwoNodes(t *testing.T) {
	r := startGroupRegion(t, 2)
	phone := runDev(t, r.Nodes[0].DeviceURL(), "phone", devOpts{user: "alice"})
	tablet := runDev(t, r.Nodes[1].DeviceURL(), "tablet", devOpts{user: "alice"})
	laptop := runDev(t, r.Nodes[1].DeviceURL(), "laptop", devOpts{user: "alice"})
	laptop.stop()
	other := runDev(t, r.Nodes[0].DeviceURL(), "kiosk", devOpts{user: "bob"})

	resp := mustPushReq(t, r.Nodes[0], api.PushRequest{Users: []string{"alice", "nobody"}, Data: api.Ptr("for alice")})
	if !resp.Stored {
		t.Fatalf("not stored: %+v", resp)
	}
	got := map[string]string{}
	for _, res := range resp.Results {
		got[res.User+"/"+res.Device] = res.Status + "/" + res.Reason
		if res.Device != "" && res.Seq == 0 {
			t.Errorf("result %+v has no seq", res)
		}
	}
	want := map[string]string{"alice/phone": "delivered/", "alice/tablet": "delivered/", "alice/laptop": "stored/", "nobody/": "rejected/no_devices"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("results %v, want %v", got, want)
	}
	phone.waitPayloads(t, "for alice")
	tablet.waitPayloads(t, "for alice")
	laptop = runDev(t, r.Nodes[0].DeviceURL(), "laptop", devOpts{user: "alice"})
	laptop.waitPayloads(t, "for alice")

	// A second push, then a reconnect of every device: nothing is seen
	// twice by the app.
	mustPushReq(t, r.Nodes[1], api.PushRequest{Users: []string{"alice"}, Data: api.Ptr("again")})
	for _, d := range []*dev{phone, tablet, laptop} {
		d.waitPayloads(t, "for alice", "again")
	}
	if msgs := other.messages(); len(msgs) != 0 {
		t.Fatalf("bob's device got %d messages for alice", len(msgs))
	}

	st, err := pushClient(t, r.Nodes[1], testAPIKey).User(ctxT(t), testApp, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var devices []string
	for _, d := range st.Devices {
		devices = append(devices, d.Device+fmt.Sprint(d.Online))
		if d.LastSeen.IsZero() {
			t.Errorf("%s has no last_seen", d.Device)
		}
	}
	sort.Strings(devices)
	if !slices.Equal(devices, []string{"laptoptrue", "phonetrue", "tablettrue"}) {
		t.Fatalf("user state devices %v", devices)
	}
}

// A device that connects as another user is no longer reached by the
// first user's pushes.
func TestUsers_DeviceThatChangedUserLeavesTheOldOne(t *testing.T) {
	r := startGroupRegion(t, 1)
	d := runDev(t, r.Nodes[0].DeviceURL(), "shared", devOpts{user: "alice"})
	d.stop()
	d = runDev(t, r.Nodes[0].DeviceURL(), "shared", devOpts{user: "bob"})
	resp := mustPushReq(t, r.Nodes[0], api.PushRequest{Users: []string{"alice"}, Data: api.Ptr("for alice")})
	if len(resp.Results) != 1 || resp.Results[0].Reason != "no_devices" {
		t.Fatalf("alice's push reached %+v", resp.Results)
	}
	mustPushReq(t, r.Nodes[0], api.PushRequest{Users: []string{"bob"}, Data: api.Ptr("for bob")})
	d.waitPayloads(t, "for bob")
}

// A group's membership is the business's, in Redis: a device added once
// is a member at every connect, on any node, without joining.
func TestGroups_MembershipSurvivesAReconnectToAnotherNode(t *testing.T) {
	r := startGroupRegion(t, 2)
	d := runDev(t, r.Nodes[0].DeviceURL(), "phone", devOpts{})
	u := runDev(t, r.Nodes[1].DeviceURL(), "watch", devOpts{user: "carol"})
	resp := changeMembers(t, r.Nodes[1], "room", api.OpAdd, []string{"phone", "bad id"}, []string{"carol"})
	want := []api.GroupMemberResult{{Device: "phone", Status: api.MemberAdded, Sessions: 1},
		{Device: "bad id", Status: api.MemberRejected, Reason: "invalid_id"}, {User: "carol", Status: api.MemberAdded, Sessions: 1}}
	if fmt.Sprint(resp.Results) != fmt.Sprint(want) {
		t.Fatalf("results %+v, want %+v", resp.Results, want)
	}
	mustPushReq(t, r.Nodes[0], api.PushRequest{Group: api.Ptr("room"), Data: api.Ptr("one")})
	d.waitPayloads(t, "one")
	u.waitPayloads(t, "one")

	// Both reconnect, each to the other node.
	d.stop()
	u.stop()
	d = runDev(t, r.Nodes[1].DeviceURL(), "phone", devOpts{})
	u = runDev(t, r.Nodes[0].DeviceURL(), "watch", devOpts{user: "carol"})
	mustPushReq(t, r.Nodes[1], api.PushRequest{Group: api.Ptr("room"), Data: api.Ptr("two")})
	d.waitPayloads(t, "two")
	u.waitPayloads(t, "two")

	st, err := pushClient(t, r.Nodes[0], testAPIKey).Group(ctxT(t), testApp, "room", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != 2 || len(st.Members) != 2 || st.Stream.MaxLen != 0 {
		t.Fatalf("group state %+v", st)
	}

	// Removed, the device gets nothing more, at once and after a
	// reconnect.
	changeMembers(t, r.Nodes[0], "room", api.OpRemove, []string{"phone"}, nil)
	mustPushReq(t, r.Nodes[0], api.PushRequest{Group: api.Ptr("room"), Data: api.Ptr("three")})
	u.waitPayloads(t, "two", "three")
	d.stop()
	d = runDev(t, r.Nodes[0].DeviceURL(), "phone", devOpts{})
	mustPushReq(t, r.Nodes[1], api.PushRequest{Group: api.Ptr("room"), Data: api.Ptr("four")})
	u.waitPayloads(t, "two", "three", "four")
	if got := d.payloads(); len(got) != 0 {
		t.Fatalf("a removed member got %q", got)
	}
}

// A member of a group with a catch-up stream that was away for a few
// messages gets them after its reconnect, in order, and a CATCHUP that
// says nothing was lost; one away for longer than the stream holds gets
// what the stream has and recovered false.
func TestGroups_CatchUpAfterAShortAbsenceAndNotAfterALongOne(t *testing.T) {
	r := startGroupRegion(t, 2)
	cl := pushClient(t, r.Nodes[0], testAPIKey)
	if _, err := cl.SetGroupStream(ctxT(t), "live", &api.GroupStreamRequest{App: api.Ptr(testApp), MaxLen: api.Ptr(int64(5)), MaxAge: api.Ptr("1h")}); err != nil {
		t.Fatal(err)
	}
	short := runDev(t, r.Nodes[0].DeviceURL(), "short", devOpts{})
	long := runDev(t, r.Nodes[1].DeviceURL(), "long", devOpts{})
	changeMembers(t, r.Nodes[0], "live", api.OpAdd, []string{"short", "long"}, nil)
	for _, d := range []*dev{short, long} {
		if cu := d.lastCatchUp(t, "live"); !cu.Recovered || cu.Seq != 0 {
			t.Fatalf("%s joined with CATCHUP %+v", d.id, cu)
		}
	}
	resp := mustPushReq(t, r.Nodes[0], api.PushRequest{Group: api.Ptr("live"), Data: api.Ptr("m1")})
	if !resp.Stored || resp.GroupSeq != 1 || resp.GroupEpoch == "" {
		t.Fatalf("a push to a group with a stream: %+v", resp)
	}
	short.waitPayloads(t, "m1")
	long.waitPayloads(t, "m1")
	shortCursor, longCursor := short.groupCursor("live"), long.groupCursor("live")
	if shortCursor.Seq != 1 || shortCursor.Epoch != resp.GroupEpoch {
		t.Fatalf("cursor after m1: %+v", shortCursor)
	}
	short.stop()
	long.stop()
	for i := 2; i <= 4; i++ {
		mustPushReq(t, r.Nodes[i%2], api.PushRequest{Group: api.Ptr("live"), Data: api.Ptr(fmt.Sprintf("m%d", i))})
	}
	short = runDev(t, r.Nodes[1].DeviceURL(), "short", devOpts{cursors: []client.GroupCursor{shortCursor}})
	short.waitPayloads(t, "m2", "m3", "m4")
	for i, m := range short.messages() {
		if m.GroupEpoch != resp.GroupEpoch || m.GroupSeq != uint64(i+2) {
			t.Fatalf("caught-up message %d at %s/%d, want %s/%d", i, m.GroupEpoch, m.GroupSeq, resp.GroupEpoch, i+2)
		}
	}
	if cu := short.lastCatchUp(t, "live"); !cu.Recovered || cu.Seq != 4 || cu.Epoch != resp.GroupEpoch {
		t.Fatalf("short absence: CATCHUP %+v", cu)
	}
	if c := short.groupCursor("live"); c.Seq != 4 {
		t.Fatalf("cursor after the catch-up %+v", c)
	}

	for i := 5; i <= 10; i++ {
		mustPushReq(t, r.Nodes[0], api.PushRequest{Group: api.Ptr("live"), Data: api.Ptr(fmt.Sprintf("m%d", i))})
	}
	short.waitPayloads(t, "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10")
	long = runDev(t, r.Nodes[0].DeviceURL(), "long", devOpts{cursors: []client.GroupCursor{longCursor}})
	long.waitPayloads(t, "m6", "m7", "m8", "m9", "m10")
	if cu := long.lastCatchUp(t, "live"); cu.Recovered || cu.Seq != 10 {
		t.Fatalf("long absence: CATCHUP %+v, want recovered false at 10", cu)
	}
}

// A filtered broadcast reaches exactly the sessions the filter matches:
// checked against a list the test computes on its own from each device's
// attributes.
func TestBroadcast_FilterReachesExactlyTheMatchingSessions(t *testing.T) {
	r := startGroupRegion(t, 2)
	rng := rand.New(rand.NewPCG(10, 20))
	platforms := []string{"ios", "android", "web"}
	versions := []string{"1.2", "1.9.3", "1.10", "2.0.1", "2.5", "3.0"}
	tagSets := [][]string{nil, {"beta"}, {"vip"}, {"beta", "vip"}}
	businessSets := [][]string{nil, {"news"}, {"chat"}, {"news", "chat"}}
	type attrs struct {
		platform, version string
		tags, businesses  []string
	}
	devs := map[string]*dev{}
	attrsOf := map[string]attrs{}
	for i := range 24 {
		id := fmt.Sprintf("d%02d", i)
		a := attrs{platforms[rng.IntN(3)], versions[rng.IntN(len(versions))], tagSets[rng.IntN(4)], businessSets[rng.IntN(4)]}
		attrsOf[id] = a
		devs[id] = runDev(t, r.Nodes[i%2].DeviceURL(), id, devOpts{platform: a.platform, version: a.version, tags: a.tags, businesses: a.businesses})
	}
	filters := []struct {
		name   string
		filter api.Filter
		// matches decides, from attributes alone, whether a session is in
		// the audience of a news broadcast with the filter.
		matches func(a attrs) bool
	}{
		{"ios or android, 1.9 to 2.0.x, tagged vip",
			api.Filter{Platforms: []string{"ios", "android"}, Versions: []api.VersionMatch{{Min: api.Ptr("1.9"), Max: api.Ptr("2.0.9")}}, Tags: []string{"vip"}},
			func(a attrs) bool {
				return (a.platform == "ios" || a.platform == "android") && slices.Contains(a.tags, "vip") &&
					slices.Contains([]string{"1.9.3", "1.10", "2.0.1"}, a.version)
			}},
		{"versions 2.x or exactly up to 1.2",
			api.Filter{Versions: []api.VersionMatch{{Prefix: api.Ptr("2.")}, {Max: api.Ptr("1.2")}}},
			func(a attrs) bool { return strings.HasPrefix(a.version, "2.") || a.version == "1.2" }},
		{"beta on the web", api.Filter{Platforms: []string{"web"}, Tags: []string{"beta"}},
			func(a attrs) bool { return a.platform == "web" && slices.Contains(a.tags, "beta") }},
	}
	for k, f := range filters {
		data := fmt.Sprintf("f%d", k)
		resp := mustPushReq(t, r.Nodes[k%2], api.PushRequest{Broadcast: true, Business: api.Ptr("news"), Filter: &f.filter, Data: api.Ptr(data)})
		var want []string
		for id, a := range attrsOf {
			// A news message goes only to sessions that declared news or
			// declared no business.
			if f.matches(a) && (len(a.businesses) == 0 || slices.Contains(a.businesses, "news")) {
				want = append(want, id)
			}
		}
		sort.Strings(want)
		if len(want) == 0 {
			t.Fatalf("filter %q matches no device: the test proves nothing", f.name)
		}
		poll.Until(t, 10*time.Second, func() error {
			var got []string
			for id, d := range devs {
				if slices.Contains(d.payloads(), data) {
					got = append(got, id)
				}
			}
			sort.Strings(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("filter %q reached %v, want %v", f.name, got, want)
			}
			return nil
		})
		if *resp.Recipients+*resp.OtherNodes == 0 {
			t.Errorf("answer %+v", resp)
		}
	}
}

// A message of a business reaches only sessions that declared it (or
// declared none), whatever its kind: unicast, group, broadcast.
func TestBusiness_MessageNeverReachesASessionThatDidNotDeclareIt(t *testing.T) {
	r := startGroupRegion(t, 1)
	n := r.Nodes[0]
	chat := runDev(t, n.DeviceURL(), "chat-only", devOpts{businesses: []string{"chat"}})
	any := runDev(t, n.DeviceURL(), "any", devOpts{})
	changeMembers(t, n, "room", api.OpAdd, []string{"chat-only", "any"}, nil)

	mustPushReq(t, n, api.PushRequest{Broadcast: true, Business: api.Ptr("news"), Data: api.Ptr("broadcast news")})
	mustPushReq(t, n, api.PushRequest{Group: api.Ptr("room"), Business: api.Ptr("news"), Data: api.Ptr("group news")})
	resp := mustPushReq(t, n, api.PushRequest{Devices: []string{"chat-only", "any"}, Business: api.Ptr("news"), Data: api.Ptr("unicast news")})
	mustPushReq(t, n, api.PushRequest{Devices: []string{"chat-only", "any"}, Business: api.Ptr("chat"), Data: api.Ptr("unicast chat")})
	mustPushReq(t, n, api.PushRequest{Broadcast: true, Data: api.Ptr("no business")})
	any.waitPayloads(t, "broadcast news", "group news", "unicast news", "unicast chat", "no business")
	chat.waitPayloads(t, "unicast chat", "no business")
	// The skipped inbox message is a flagged gap to the device, and its
	// ack of the next one removes it from the inbox.
	if chat.gaps != 1 {
		t.Fatalf("chat-only saw %d skipped seqs, want 1", chat.gaps)
	}
	if !resp.Stored {
		t.Fatal("the news push was not stored")
	}
	poll.Until(t, 5*time.Second, func() error {
		st, err := pushClient(t, n, testAPIKey).Device(ctxT(t), testApp, "chat-only")
		if err != nil || st.InboxLen != 0 || st.Acked != 2 {
			return fmt.Errorf("chat-only's inbox %+v, %v", st, err)
		}
		return nil
	})
}

// An app can leave its groups to its business: its devices' JOIN and
// LEAVE are refused, memberships the business makes still work.
func TestGroups_ClientJoinRefusedForAnAppThatDoesNotAllowIt(t *testing.T) {
	r := startGroupRegion(t, 1)
	n := r.Nodes[0]
	d := runDev(t, n.DeviceURL(), "phone", devOpts{})
	if err := d.c.Join(ctxT(t), "room"); err != nil {
		t.Fatalf("join while the app allows it: %v", err)
	}
	if _, err := r.Raft.Apply(context.Background(), raftmeta.SetAppClientGroups(testApp, false)); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		err := d.c.Join(ctxT(t), "other")
		var refused *client.RefusedError
		if !errors.As(err, &refused) || refused.Code != wire.CodeJoinRefused {
			return fmt.Errorf("join: %v, want join_refused", err)
		}
		return nil
	})
	var refused *client.RefusedError
	if err := d.c.Leave(ctxT(t), "room"); !errors.As(err, &refused) || refused.Code != wire.CodeJoinRefused {
		t.Fatalf("leave: %v, want join_refused", err)
	}
	changeMembers(t, n, "managed", api.OpAdd, []string{"phone"}, nil)
	mustPushReq(t, n, api.PushRequest{Group: api.Ptr("managed"), Data: api.Ptr("managed")})
	d.waitPayloads(t, "managed")
}
