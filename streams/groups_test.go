package streams

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

func device(name string) MemberChange { return MemberChange{Name: "d:" + name, Key: "a/" + name} }
func user(name string) MemberChange {
	return MemberChange{Name: "u:" + name, Key: "a/" + name, User: true}
}

func statuses(rs []MemberResult) []MemberStatus {
	out := make([]MemberStatus, len(rs))
	for i, r := range rs {
		out[i] = r.Status
	}
	return out
}

// ChangeMembers keeps both sides of a membership and reports where the
// members' sessions are: a device's route, a user's devices.
func TestStore_ChangeMembersKeepsBothSides(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	mustOpenMany(t, env.store, OpenRequest{Device: "a/phone", Node: "n1"}, OpenRequest{Device: "a/tab", Node: "n2", User: "a/alice"})
	res, err := env.store.ChangeMembers(ctx, "a/room", true, []MemberChange{device("phone"), user("alice"), device("offline")})
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(res); !reflect.DeepEqual(got, []MemberStatus{MemberChanged, MemberChanged, MemberChanged}) {
		t.Fatalf("statuses %v", got)
	}
	if res[0].Route.Node != "n1" || res[0].Route.Epoch == 0 || !reflect.DeepEqual(res[1].Devices, []string{"a/tab"}) || res[2].Route.Node != "" {
		t.Fatalf("results %+v", res)
	}
	info, err := env.store.Group(ctx, "a/room", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(info.Members)
	if info.Size != 3 || !reflect.DeepEqual(info.Members, []string{"d:offline", "d:phone", "u:alice"}) || info.Next != 0 {
		t.Fatalf("group %+v", info)
	}
	out := mustOpenMany(t, env.store, OpenRequest{Device: "a/phone", Node: "n1"}, OpenRequest{Device: "a/tab", Node: "n2", User: "a/alice"})
	if !reflect.DeepEqual(out[0].Groups, []string{"a/room"}) || !reflect.DeepEqual(out[1].UserGroups, []string{"a/room"}) {
		t.Fatalf("groups read on open: %q, user %q", out[0].Groups, out[1].UserGroups)
	}

	res, err = env.store.ChangeMembers(ctx, "a/room", true, []MemberChange{device("phone")})
	if err != nil || res[0].Status != MemberUnchanged {
		t.Fatalf("added again: %+v %v", res, err)
	}
	res, err = env.store.ChangeMembers(ctx, "a/room", false, []MemberChange{device("phone"), device("stranger")})
	if err != nil || !reflect.DeepEqual(statuses(res), []MemberStatus{MemberChanged, MemberUnchanged}) {
		t.Fatalf("removed: %+v %v", res, err)
	}
	if res[0].Route.Node != "n1" {
		t.Fatalf("a removed device's route %+v", res[0].Route)
	}
	if out := mustOpenMany(t, env.store, OpenRequest{Device: "a/phone", Node: "n1"}); out[0].Groups != nil {
		t.Fatalf("a removed member still has groups %q", out[0].Groups)
	}
	if info, _ = env.store.Group(ctx, "a/room", 0, 100); info.Size != 2 {
		t.Fatalf("size after removal %d", info.Size)
	}
}

// Both bounds hold: a full group refuses new members, and a member in
// MemberMaxGroups groups is refused and taken back out of the group's
// set, so the two sides never disagree.
func TestStore_ChangeMembersBounds(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{GroupMaxMembers: 2, MemberMaxGroups: 2})
	ctx := testCtx(t)
	res, err := env.store.ChangeMembers(ctx, "a/g1", true, []MemberChange{device("x"), device("y"), device("z")})
	if err != nil || !reflect.DeepEqual(statuses(res), []MemberStatus{MemberChanged, MemberChanged, MemberGroupFull}) {
		t.Fatalf("full group: %+v %v", res, err)
	}
	if _, err := env.store.ChangeMembers(ctx, "a/g2", true, []MemberChange{device("x")}); err != nil {
		t.Fatal(err)
	}
	res, err = env.store.ChangeMembers(ctx, "a/g3", true, []MemberChange{device("x"), device("w")})
	if err != nil || !reflect.DeepEqual(statuses(res), []MemberStatus{MemberTooManyGroups, MemberChanged}) {
		t.Fatalf("member in too many groups: %+v %v", res, err)
	}
	info, err := env.store.Group(ctx, "a/g3", 0, 10)
	if err != nil || !reflect.DeepEqual(info.Members, []string{"d:w"}) {
		t.Fatalf("g3 lists %q (%v); the refused member must be taken back out", info.Members, err)
	}
}

func TestStore_GroupPages(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	var all []MemberChange
	for i := range 300 {
		all = append(all, device(fmt.Sprintf("d%03d", i)))
	}
	if _, err := env.store.ChangeMembers(ctx, "a/big", true, all); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	cursor, pages := uint64(0), 0
	for {
		info, err := env.store.Group(ctx, "a/big", cursor, 50)
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != 300 {
			t.Fatalf("size %d", info.Size)
		}
		for _, m := range info.Members {
			seen[m] = true
		}
		pages++
		if cursor = info.Next; cursor == 0 {
			break
		}
	}
	if len(seen) != 300 || pages < 2 {
		t.Fatalf("%d members over %d pages", len(seen), pages)
	}
}

func groupMsg(id string) GroupMessage {
	return GroupMessage{ID: id, Business: "chat", Priority: PriorityNormal, Payload: []byte("p " + id), Filter: []byte(`{"tags":["x"]}`)}
}

func appendGroupN(t *testing.T, s *Store, group string, from, to int) (epoch string) {
	t.Helper()
	for i := from; i <= to; i++ {
		e, seq, err := s.AppendGroup(testCtx(t), group, groupMsg(fmt.Sprintf("g%d", i)))
		if err != nil || seq != uint64(i) {
			t.Fatalf("append g%d: seq %d, %v", i, seq, err)
		}
		epoch = e
	}
	return epoch
}

func groupSeqs(es []GroupEntry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func mustReadGroup(t *testing.T, s *Store, r GroupRead) GroupReadResult {
	t.Helper()
	out, err := s.ReadGroups(testCtx(t), []GroupRead{r})
	if err != nil {
		t.Fatal(err)
	}
	return out[0]
}

// A group without a stream stores nothing; with one, each append is one
// entry with the next seq, and a member catches up from its cursor.
func TestStore_GroupStreamCatchUp(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	if e, seq, err := env.store.AppendGroup(ctx, "a/room", groupMsg("g0")); err != nil || e != "" || seq != 0 {
		t.Fatalf("append without a stream: %q %d %v", e, seq, err)
	}
	if r := mustReadGroup(t, env.store, GroupRead{Group: "a/room"}); r.On {
		t.Fatalf("a group without a stream reads %+v", r)
	}
	st, err := env.store.SetGroupStream(ctx, "a/room", 100, time.Minute)
	if err != nil || st.Epoch == "" || st.Last != 0 {
		t.Fatalf("stream on: %+v %v", st, err)
	}
	epoch := appendGroupN(t, env.store, "a/room", 1, 5)
	if epoch != st.Epoch {
		t.Fatalf("epoch %q, stream said %q", epoch, st.Epoch)
	}
	fresh := mustReadGroup(t, env.store, GroupRead{Group: "a/room"})
	if !fresh.On || !fresh.Recovered || len(fresh.Entries) != 0 || fresh.Upto != 5 || fresh.Epoch != epoch {
		t.Fatalf("a member without a cursor: %+v", fresh)
	}
	r := mustReadGroup(t, env.store, GroupRead{Group: "a/room", Epoch: epoch, After: 2})
	if !r.Recovered || !equalSeqs(groupSeqs(r.Entries), 3, 4, 5) || r.Upto != 5 || r.More {
		t.Fatalf("from 2: %+v", r)
	}
	e := r.Entries[0]
	if e.ID != "g3" || e.Business != "chat" || e.Priority != PriorityNormal || string(e.Payload) != "p g3" || string(e.Filter) != `{"tags":["x"]}` || e.Created.IsZero() {
		t.Fatalf("entry %+v", e)
	}
	// In chunks: More until the end, each chunk read on from its Upto.
	r = mustReadGroup(t, env.store, GroupRead{Group: "a/room", Epoch: epoch, After: 0, Limit: 2})
	if !r.Recovered || !equalSeqs(groupSeqs(r.Entries), 1, 2) || r.Upto != 2 || !r.More {
		t.Fatalf("first chunk: %+v", r)
	}
	r = mustReadGroup(t, env.store, GroupRead{Group: "a/room", Epoch: epoch, After: r.Upto, Limit: 3})
	if !r.Recovered || !equalSeqs(groupSeqs(r.Entries), 3, 4, 5) || r.More {
		t.Fatalf("last chunk: %+v", r)
	}
	if r := mustReadGroup(t, env.store, GroupRead{Group: "a/room", Epoch: epoch, After: 5}); !r.Recovered || len(r.Entries) != 0 || r.Upto != 5 {
		t.Fatalf("up to date: %+v", r)
	}
	// A resent append (same message id) stores nothing new.
	if _, seq, err := env.store.AppendGroup(ctx, "a/room", groupMsg("g5")); err != nil || seq != 5 {
		t.Fatalf("resent append: seq %d, %v", seq, err)
	}
}

// Every way a cursor can miss messages reads as not recovered, with what
// the stream still holds.
func TestStore_GroupStreamGaps(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	if _, err := env.store.SetGroupStream(ctx, "a/room", 3, time.Minute); err != nil {
		t.Fatal(err)
	}
	epoch := appendGroupN(t, env.store, "a/room", 1, 6)
	cases := []struct {
		name  string
		read  GroupRead
		seqs  []uint64
		valid bool
	}{
		{"within the kept length", GroupRead{Epoch: epoch, After: 3}, []uint64{4, 5, 6}, true},
		{"trimmed by length", GroupRead{Epoch: epoch, After: 1}, []uint64{4, 5, 6}, false},
		{"another epoch", GroupRead{Epoch: "old", After: 5}, []uint64{4, 5, 6}, false},
		{"cursor past the counter", GroupRead{Epoch: epoch, After: 9}, []uint64{4, 5, 6}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.read.Group = "a/room"
			r := mustReadGroup(t, env.store, c.read)
			if r.Recovered != c.valid || !equalSeqs(groupSeqs(r.Entries), c.seqs...) || r.Upto != 6 {
				t.Fatalf("%+v", r)
			}
		})
	}

	// By age: entries older than the max age are trimmed by the next
	// append, and skipped unread before it.
	if _, err := env.store.SetGroupStream(ctx, "a/aged", 100, time.Hour); err != nil {
		t.Fatal(err)
	}
	old := groupMsg("old")
	old.Created = time.Now().Add(-2 * time.Hour)
	if _, _, err := env.store.AppendGroup(ctx, "a/aged", old); err != nil {
		t.Fatal(err)
	}
	aged, _, err := env.store.AppendGroup(ctx, "a/aged", groupMsg("new"))
	if err != nil {
		t.Fatal(err)
	}
	if r := mustReadGroup(t, env.store, GroupRead{Group: "a/aged", Epoch: aged, After: 0}); r.Recovered || !equalSeqs(groupSeqs(r.Entries), 2) {
		t.Fatalf("a cursor before an aged-out entry: %+v", r)
	}
	if r := mustReadGroup(t, env.store, GroupRead{Group: "a/aged", Epoch: aged, After: 1}); !r.Recovered {
		t.Fatalf("a cursor after it: %+v", r)
	}

	// Lost with the stream key (it expired, or Redis lost it): the missing
	// tail is a gap.
	mustDo(t, env.rdb.Del(ctx, groupStreamKey("a/room")))
	if r := mustReadGroup(t, env.store, GroupRead{Group: "a/room", Epoch: epoch, After: 5}); r.Recovered || len(r.Entries) != 0 || r.Upto != 6 {
		t.Fatalf("stream lost: %+v", r)
	}
	if r := mustReadGroup(t, env.store, GroupRead{Group: "a/room", Epoch: epoch, After: 6}); !r.Recovered {
		t.Fatalf("a cursor that had everything before the loss: %+v", r)
	}
}

// Turning a stream off forgets it; on again is a new epoch, and lowering
// the length trims at once.
func TestStore_SetGroupStream(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	st, err := env.store.SetGroupStream(ctx, "a/room", 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	appendGroupN(t, env.store, "a/room", 1, 6)
	if st, err = env.store.SetGroupStream(ctx, "a/room", 2, time.Minute); err != nil || st.Trimmed != 4 || st.Last != 6 {
		t.Fatalf("lowered: %+v %v", st, err)
	}
	if n := env.rdb.XLen(ctx, groupStreamKey("a/room")).Val(); n != 2 {
		t.Fatalf("stream holds %d entries after lowering to 2", n)
	}
	info, _ := env.store.Group(ctx, "a/room", 0, 1)
	if info.Stream.MaxLen != 2 || info.Stream.MaxAge != time.Minute || info.Stream.Last != 6 {
		t.Fatalf("group's stream %+v", info.Stream)
	}
	if _, err := env.store.SetGroupStream(ctx, "a/room", 0, 0); err != nil {
		t.Fatal(err)
	}
	if info, _ = env.store.Group(ctx, "a/room", 0, 1); info.Stream != (GroupStream{}) {
		t.Fatalf("off: %+v", info.Stream)
	}
	again, err := env.store.SetGroupStream(ctx, "a/room", 5, time.Minute)
	if err != nil || again.Epoch == st.Epoch || again.Last != 0 {
		t.Fatalf("on again: %+v (before %q) %v", again, st.Epoch, err)
	}
	for _, bad := range []struct {
		len int64
		age time.Duration
	}{{-1, time.Minute}, {5, 0}} {
		if _, err := env.store.SetGroupStream(ctx, "a/room", bad.len, bad.age); err == nil {
			t.Fatalf("accepted %d entries for %s", bad.len, bad.age)
		}
	}
}
