package streams

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func mustOpenMany(t *testing.T, s *Store, reqs ...OpenRequest) []Opened {
	t.Helper()
	out := s.OpenMany(testCtx(t), reqs)
	for i, o := range out {
		if o.Err != nil {
			t.Fatalf("open %+v: %v", reqs[i], o.Err)
		}
	}
	return out
}

func deviceIDs(list []UserDevice) []string {
	out := make([]string, len(list))
	for i, d := range list {
		out[i] = d.Device
	}
	return out
}

// OpenMany records each device under the user it connects as, a push to
// the user resolves to them, and a device that connects as another user
// leaves the first user's index.
func TestStore_UserIndexFollowsHandshakes(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	mustOpenMany(t, env.store,
		OpenRequest{Device: "a/phone", Node: "n1", User: "a/alice"},
		OpenRequest{Device: "a/tablet", Node: "n2", User: "a/alice"},
		OpenRequest{Device: "a/laptop", Node: "n1", User: "a/bob"},
		OpenRequest{Device: "a/kiosk", Node: "n1"})
	got, err := env.store.UserDevices(ctx, []string{"a/alice", "a/bob", "a/nobody"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, [][]string{{"a/phone", "a/tablet"}, {"a/laptop"}, {}}) {
		t.Fatalf("user devices = %q", got)
	}

	// The tablet now belongs to bob: it leaves alice's index.
	mustOpenMany(t, env.store, OpenRequest{Device: "a/tablet", Node: "n1", User: "a/bob"})
	if got, _ = env.store.UserDevices(ctx, []string{"a/alice", "a/bob"}); !reflect.DeepEqual(got, [][]string{{"a/phone"}, {"a/laptop", "a/tablet"}}) {
		t.Fatalf("after the tablet moved to bob: %q", got)
	}
	// A device that connects with no user leaves its user too.
	mustOpenMany(t, env.store, OpenRequest{Device: "a/laptop", Node: "n1"})
	info, err := env.store.User(ctx, "a/bob")
	if err != nil {
		t.Fatal(err)
	}
	if ids := deviceIDs(info.Devices); !reflect.DeepEqual(ids, []string{"a/tablet"}) {
		t.Fatalf("bob's devices after the laptop connected without a user: %q", ids)
	}
	if info.Devices[0].LastSeen.IsZero() || time.Since(info.Devices[0].LastSeen) > time.Minute {
		t.Fatalf("last seen %v", info.Devices[0].LastSeen)
	}
}

// A stale index entry (the old user's cleanup lost) never sends a push
// to a device that now belongs to another user: UserDevices checks each
// device's current user and drops the entry.
func TestStore_UserDevicesSkipsDevicesOfAnotherUser(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	mustOpenMany(t, env.store, OpenRequest{Device: "a/phone", Node: "n1", User: "a/alice"})
	mustOpenMany(t, env.store, OpenRequest{Device: "a/phone", Node: "n1", User: "a/bob"})
	// Put the stale entry back, as if the cleanup had failed.
	mustDo(t, env.rdb.ZAdd(ctx, userDevicesKey("a/alice"), redisZ(time.Now(), "a/phone")))
	got, err := env.store.UserDevices(ctx, []string{"a/alice"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got[0]) != 0 {
		t.Fatalf("alice resolves to %q, a device that is bob's now", got[0])
	}
	if n := env.rdb.ZCard(ctx, userDevicesKey("a/alice")).Val(); n != 0 {
		t.Fatalf("the stale entry is still in alice's index (%d entries)", n)
	}
}

// The index keeps at most UserMaxDevices, the most recently seen, and
// none older than UserDeviceTTL; its key expires with the last of them.
func TestStore_UserIndexBounds(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{UserMaxDevices: 3, UserDeviceTTL: time.Hour})
	ctx := testCtx(t)
	for _, d := range []string{"a/d1", "a/d2", "a/d3", "a/d4"} {
		mustOpenMany(t, env.store, OpenRequest{Device: d, Node: "n1", User: "a/u"})
	}
	got, err := env.store.UserDevices(ctx, []string{"a/u"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got[0], []string{"a/d2", "a/d3", "a/d4"}) {
		t.Fatalf("devices = %q, want the last three", got[0])
	}
	// An entry older than the TTL is not a device of the user any more.
	mustDo(t, env.rdb.ZAdd(ctx, userDevicesKey("a/u"), redisZ(time.Now().Add(-2*time.Hour), "a/d2")))
	if got, _ = env.store.UserDevices(ctx, []string{"a/u"}); !reflect.DeepEqual(got[0], []string{"a/d3", "a/d4"}) {
		t.Fatalf("devices = %q, want d2 left out as too old", got[0])
	}
	if ttl := env.rdb.PTTL(ctx, userDevicesKey("a/u")).Val(); ttl <= 0 || ttl > time.Hour {
		t.Fatalf("index key ttl %v, want up to an hour", ttl)
	}
}

// OpenMany reads the device's groups with its resume, and the user's
// groups with the index, in one round trip for any number of devices.
func TestStore_OpenManyReadsGroupsInOneRoundTrip(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	mustOpenMany(t, env.store, OpenRequest{Device: "a/warm", Node: "n1", User: "a/warm"})
	for _, g := range []string{"a/news", "a/room"} {
		if _, err := env.store.ChangeMembers(ctx, g, true, []MemberChange{{Name: "d:phone", Key: "a/phone"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.store.ChangeMembers(ctx, "a/vip", true, []MemberChange{{Name: "u:alice", Key: "a/alice", User: true}}); err != nil {
		t.Fatal(err)
	}
	// Every script on every primary: a cluster primary that has not run
	// one yet costs a NOSCRIPT and an EVAL, a second trip.
	loadScripts(t, env.rdb)
	trips := countRoundTrips(env.rdb)
	out := mustOpenMany(t, env.store,
		OpenRequest{Device: "a/phone", Node: "n1", User: "a/alice"},
		OpenRequest{Device: "a/other", Node: "n1"})
	if n := trips.Load(); n != 1 {
		t.Fatalf("%d round trips, want 1", n)
	}
	slices.Sort(out[0].Groups)
	if !reflect.DeepEqual(out[0].Groups, []string{"a/news", "a/room"}) || !reflect.DeepEqual(out[0].UserGroups, []string{"a/vip"}) {
		t.Fatalf("groups %q, user groups %q", out[0].Groups, out[0].UserGroups)
	}
	if out[1].Groups != nil || out[1].UserGroups != nil {
		t.Fatalf("a device in no group: %q %q", out[1].Groups, out[1].UserGroups)
	}
	if out[0].Epoch == 0 || out[0].Resumed.Epoch == "" || !out[0].Resumed.Recovered {
		t.Fatalf("open result %+v", out[0])
	}
}

// A bad id fails its own request only, and sends nothing for it.
func TestStore_OpenManyRefusesBadIDsOneByOne(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	out := env.store.OpenMany(testCtx(t), []OpenRequest{
		{Device: "a/{x", Node: "n1"}, {Device: "a/ok", Node: "n1", User: "a/}"}, {Device: "a/fine", Node: "n1"}})
	if out[0].Err == nil || out[1].Err == nil || out[2].Err != nil || out[2].Epoch == 0 {
		t.Fatalf("results %+v", out)
	}
	if n := env.rdb.Exists(testCtx(t), routeKey("a/ok")).Val(); n != 0 {
		t.Fatal("a refused request claimed a route")
	}
}
