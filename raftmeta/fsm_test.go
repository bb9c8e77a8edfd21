package raftmeta

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/raft"
)

// harness applies log entries to an FSM directly, without raft, the way
// raft's apply goroutine would: one at a time with increasing indexes.
type harness struct {
	t       *testing.T
	f       *fsm
	index   uint64
	clock   time.Time
	changes int
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, clock: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	h.f = newFSM(func() { h.changes++ })
	return h
}

// entry encodes cmd as a log entry with a fresh request id unless one is
// set, actor "tester" and the harness clock (advanced a second per entry).
func (h *harness) entry(cmd Command) []byte {
	h.t.Helper()
	h.clock = h.clock.Add(time.Second)
	if cmd.RequestID == "" {
		cmd.RequestID = NewRequestID()
	}
	if cmd.Actor == "" {
		cmd.Actor = "tester"
	}
	if cmd.Time.IsZero() {
		cmd.Time = h.clock
	}
	data, err := cmd.encode()
	if err != nil {
		h.t.Fatal(err)
	}
	return data
}

func (h *harness) applyRaw(data []byte) *applyResponse {
	h.index++
	resp, ok := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data}).(*applyResponse)
	if !ok {
		h.t.Fatalf("index %d: FSM returned %T", h.index, resp)
	}
	return resp
}

func (h *harness) apply(cmd Command) *applyResponse {
	h.t.Helper()
	return h.applyRaw(h.entry(cmd))
}

// mustApply applies cmd and fails the test unless it succeeded.
func (h *harness) mustApply(cmd Command) Result {
	h.t.Helper()
	resp := h.apply(cmd)
	if resp.Err != nil {
		h.t.Fatalf("apply %s: %v", cmd.Type, resp.Err)
	}
	return resp.Result
}

func (h *harness) state() *State { return h.f.State() }

func testApp(id string) (App, string) {
	key, k := NewAPIKey("k1")
	return App{
		ID:        id,
		Secrets:   []Secret{NewSecret("s1")},
		APIKeys:   []APIKey{k},
		AppLimits: AppLimits{MaxPayload: 8 << 10, RatePerSec: 100, Burst: 200, Businesses: []string{"chat"}},
	}, key
}

func TestFSM_MemberCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := Member{ID: "n1", RaftAddr: "10.0.0.1:7000", AdminAddr: "10.0.0.1:9090", Weight: 10, Voter: true}
	h.mustApply(UpsertMember(m))
	joined := h.clock
	got := h.state().Members["n1"]
	m.Joined = joined
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("member = %+v, want %+v", got, m)
	}

	// A second upsert replaces the record but keeps Joined.
	m2 := m
	m2.AdminAddr = "10.0.0.1:9191"
	h.mustApply(UpsertMember(m2))
	if got := h.state().Members["n1"]; got.AdminAddr != "10.0.0.1:9191" || !got.Joined.Equal(joined) {
		t.Fatalf("after re-upsert: %+v", got)
	}

	h.mustApply(SetMemberDrain("n1", true))
	if !h.state().Members["n1"].Draining {
		t.Fatal("drain not set")
	}
	// Only member.drain changes the flag: a rejoin's upsert keeps it.
	h.mustApply(UpsertMember(m2))
	if !h.state().Members["n1"].Draining {
		t.Fatal("an upsert cleared the drain flag")
	}
	h.mustApply(SetMemberWeight("n1", 7))
	if w := h.state().Members["n1"].Weight; w != 7 {
		t.Fatalf("weight = %d", w)
	}
	h.mustApply(SetMemberVoter("n1", false))
	if got := h.state().Members["n1"]; got.Voter || !got.Draining || got.Weight != 7 {
		t.Fatalf("after member.voter false: %+v", got)
	}
	h.mustApply(SetMemberVoter("n1", true))
	h.mustApply(UpsertMember(Member{ID: "n2", RaftAddr: "10.0.0.2:7000"}))
	if v := h.state().Voters(); len(v) != 1 || v[0].ID != "n1" {
		t.Fatalf("voters = %+v", v)
	}
	h.mustApply(RemoveMember("n1"))
	if _, ok := h.state().Members["n1"]; ok {
		t.Fatal("n1 still a member")
	}
}

func TestFSM_AppCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app, key := testApp("chat")
	h.mustApply(CreateApp(app))
	created := h.clock
	a, ok := h.state().App("chat")
	if !ok {
		t.Fatal("app not created")
	}
	if !a.Created.Equal(created) || !a.Secrets[0].Created.Equal(created) || !a.APIKeys[0].Created.Equal(created) {
		t.Fatalf("timestamps not from the envelope: %+v", a)
	}
	if !h.state().VerifyAPIKey("chat", key) || h.state().VerifyAPIKey("chat", key+"x") || h.state().VerifyAPIKey("other", key) {
		t.Fatal("VerifyAPIKey wrong")
	}

	// Rotation puts the new secret first and keeps at most two older ones.
	for i := 2; i <= 5; i++ {
		h.mustApply(RotateAppSecret("chat", NewSecret(fmt.Sprintf("s%d", i))))
	}
	a, _ = h.state().App("chat")
	var ids []string
	for _, s := range a.Secrets {
		ids = append(ids, s.KeyID)
	}
	if want := []string{"s5", "s4", "s3"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("secrets = %v, want %v", ids, want)
	}

	key2, k2 := NewAPIKey("k2")
	h.mustApply(AddAPIKey("chat", k2))
	if !h.state().VerifyAPIKey("chat", key2) || !h.state().VerifyAPIKey("chat", key) {
		t.Fatal("both keys should verify")
	}
	h.mustApply(RevokeAPIKey("chat", "k1"))
	if h.state().VerifyAPIKey("chat", key) || !h.state().VerifyAPIKey("chat", key2) {
		t.Fatal("k1 should be revoked, k2 kept")
	}

	limits := AppLimits{MaxPayload: MaxPayloadCeiling, RatePerSec: 5, Burst: 10, Businesses: []string{"a", "b"}}
	h.mustApply(SetAppLimits("chat", limits))
	a, _ = h.state().App("chat")
	if a.MaxPayload != limits.MaxPayload || a.RatePerSec != 5 || a.Burst != 10 || !reflect.DeepEqual(a.Businesses, limits.Businesses) {
		t.Fatalf("limits not set: %+v", a)
	}

	if a.ClientGroupsOff {
		t.Fatal("a new app refuses client JOINs; it should allow them until told otherwise")
	}
	h.mustApply(SetAppClientGroups("chat", false))
	if a, _ = h.state().App("chat"); !a.ClientGroupsOff || a.MaxPayload != limits.MaxPayload {
		t.Fatalf("client groups off, limits kept: %+v", a)
	}
	if got := h.state().Audit[len(h.state().Audit)-1]; got.Op != "app.set-client-groups" || got.Target != "chat" || got.Summary != "allow=false" {
		t.Fatalf("audit entry %+v", got)
	}
	h.mustApply(SetAppClientGroups("chat", true))
	if a, _ = h.state().App("chat"); a.ClientGroupsOff {
		t.Fatal("client groups still off")
	}

	h.mustApply(DeleteApp("chat"))
	if _, ok := h.state().App("chat"); ok {
		t.Fatal("app not deleted")
	}
}

func TestFSM_DegradeTunablesTokens(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(Command{Type: DegradeSetType, Actor: "ops", Body: SetDegrade(Degrade{Priority: PriorityHigh, Reason: "storm", Businesses: []string{"ads"}}).Body})
	d := h.state().Degrade
	want := Degrade{Active: true, Priority: PriorityHigh, Businesses: []string{"ads"}, Reason: "storm", By: "ops", Since: h.clock}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("degrade = %+v, want %+v", d, want)
	}
	h.mustApply(DegradeOff("over"))
	if d := h.state().Degrade; d.Active || d.Reason != "over" || d.By != "tester" {
		t.Fatalf("degrade off = %+v", d)
	}

	tun := Tunables{InboxMaxLen: 500, InboxTTL: time.Hour, AckTimeout: 5 * time.Second, InFlightWindow: 8}
	h.mustApply(SetTunables(tun))
	if h.state().Tunables != tun {
		t.Fatalf("tunables = %+v", h.state().Tunables)
	}
	// A later set changes only the fields it names.
	h.mustApply(SetTunables(Tunables{InFlightWindow: 4, QueueBytes: 1 << 20}))
	tun.InFlightWindow, tun.QueueBytes = 4, 1<<20
	if h.state().Tunables != tun {
		t.Fatalf("tunables after a partial set = %+v, want %+v", h.state().Tunables, tun)
	}

	tok, at := NewAdminToken("t1", RoleOperator)
	h.mustApply(CreateAdminToken(at))
	role, id, ok := h.state().AdminRole(tok)
	if !ok || role != RoleOperator || id != "t1" {
		t.Fatalf("AdminRole = %q %q %v", role, id, ok)
	}
	if _, _, ok := h.state().AdminRole(tok + "x"); ok {
		t.Fatal("wrong token accepted")
	}
	h.mustApply(RevokeAdminToken("t1"))
	if _, _, ok := h.state().AdminRole(tok); ok {
		t.Fatal("revoked token accepted")
	}
}

func TestFSM_BadCommandsChangeNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app, _ := testApp("chat")
	h.mustApply(CreateApp(app))
	h.mustApply(UpsertMember(Member{ID: "n1", RaftAddr: "10.0.0.1:7000"}))
	_, tok := NewAdminToken("t1", RoleAdmin)
	h.mustApply(CreateAdminToken(tok))

	short := NewSecret("short")
	short.Secret = short.Secret[:MinSecretLen-1]
	_, dupKey := NewAPIKey("k1")
	appNoKeys, _ := testApp("x")
	appNoKeys.APIKeys = nil
	bigPayload := AppLimits{MaxPayload: MaxPayloadCeiling + 1}

	cases := []struct {
		name string
		cmd  Command
		want error
	}{
		{"create existing app", CreateApp(app), ErrConflict},
		{"create app without keys", CreateApp(appNoKeys), ErrInvalid},
		{"delete unknown app", DeleteApp("nope"), ErrNotFound},
		{"rotate unknown app", RotateAppSecret("nope", NewSecret("s2")), ErrNotFound},
		{"rotate to existing key id", RotateAppSecret("chat", NewSecret("s1")), ErrConflict},
		{"rotate short secret", RotateAppSecret("chat", short), ErrInvalid},
		{"add duplicate key id", AddAPIKey("chat", dupKey), ErrConflict},
		{"revoke unknown key", RevokeAPIKey("chat", "nope"), ErrNotFound},
		{"payload over ceiling", SetAppLimits("chat", bigPayload), ErrInvalid},
		{"negative rate", SetAppLimits("chat", AppLimits{RatePerSec: -1}), ErrInvalid},
		{"client groups of unknown app", SetAppClientGroups("nope", false), ErrNotFound},
		{"client groups of bad app id", SetAppClientGroups("a b", false), ErrInvalid},
		{"bad app id", DeleteApp("a b"), ErrInvalid},
		{"remove unknown member", RemoveMember("n9"), ErrNotFound},
		{"drain unknown member", SetMemberDrain("n9", true), ErrNotFound},
		{"suffrage of unknown member", SetMemberVoter("n9", true), ErrNotFound},
		{"suffrage of bad member id", SetMemberVoter("a b", true), ErrInvalid},
		{"negative weight", SetMemberWeight("n1", -1), ErrInvalid},
		{"member without raft addr", UpsertMember(Member{ID: "n2"}), ErrInvalid},
		{"member at another's address", UpsertMember(Member{ID: "n2", RaftAddr: "10.0.0.1:7000"}), ErrConflict},
		{"degrade priority 0", SetDegrade(Degrade{}), ErrInvalid},
		{"degrade priority 4", SetDegrade(Degrade{Priority: 4}), ErrInvalid},
		{"negative tunable", SetTunables(Tunables{AckTimeout: -time.Second}), ErrInvalid},
		{"no tunable", SetTunables(Tunables{}), ErrInvalid},
		{"window over the bound", SetTunables(Tunables{InFlightWindow: MaxInFlightWindow + 1}), ErrInvalid},
		{"inbox cap over the bound", SetTunables(Tunables{InboxMaxLen: MaxInboxMaxLen + 1}), ErrInvalid},
		{"inbox ttl under a second", SetTunables(Tunables{InboxTTL: time.Millisecond}), ErrInvalid},
		{"queue bytes over the bound", SetTunables(Tunables{QueueBytes: MaxQueueBytes + 1}), ErrInvalid},
		{"duplicate token id", CreateAdminToken(AdminToken{ID: "t1", Role: RoleViewer, Hash: HashKey("other")}), ErrConflict},
		{"duplicate token hash", CreateAdminToken(AdminToken{ID: "t2", Role: RoleViewer, Hash: tok.Hash}), ErrConflict},
		{"token without role", CreateAdminToken(AdminToken{ID: "t3", Hash: HashKey("x")}), ErrInvalid},
		{"revoke unknown token", RevokeAdminToken("nope"), ErrNotFound},
		{"overlong request id", Command{Type: DegradeOffType, RequestID: strings.Repeat("r", maxRequestIDLen+1), Body: DegradeOff("").Body}, ErrInvalid},
		{"time out of range", Command{Type: DegradeOffType, Time: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), Body: DegradeOff("").Body}, ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.state()
			snapshot := before.Clone()
			changes := h.changes
			resp := h.apply(tc.cmd)
			if !errors.Is(resp.Err, tc.want) {
				t.Fatalf("err = %v, want %v", resp.Err, tc.want)
			}
			if h.state() != before {
				t.Fatal("a new state was published")
			}
			if !reflect.DeepEqual(before, snapshot) {
				t.Fatal("the current state was modified in place")
			}
			if h.changes != changes {
				t.Fatal("change notified for a failed command")
			}
		})
	}
}

func TestFSM_UnknownTypeWithIgnoreFlagIsSkipped(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	before := h.state()
	resp := h.apply(Command{Type: 100 | IgnoreUnknownTypeFlag, Body: json.RawMessage(`{"future":true}`)})
	if resp.Err != nil {
		t.Fatalf("err = %v", resp.Err)
	}
	if h.state() != before || h.changes != 0 {
		t.Fatal("skipped command changed the state")
	}
	// Counted for Stats, not logged: the FSM does no I/O.
	if n := h.f.skipped.Load(); n != 1 {
		t.Fatalf("skipped = %d, want 1", n)
	}
	// A known type with the flag is applied normally.
	h.mustApply(Command{Type: TunablesSetType | IgnoreUnknownTypeFlag, Body: SetTunables(Tunables{QueueFrames: 9}).Body})
	if h.state().Tunables.QueueFrames != 9 {
		t.Fatal("known type with ignore flag not applied")
	}
	if op := h.state().Audit[0].Op; op != "tunables.set" {
		t.Fatalf("audit op = %q", op)
	}
}

func TestFSM_UnknownTypeWithoutFlagPanics(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	data := h.entry(Command{Type: 100, Body: json.RawMessage(`{}`)})
	mustPanic(t, "unknown command type 100", func() { h.applyRaw(data) })
}

func TestFSM_UndecodableEntryPanics(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	mustPanic(t, "undecodable log entry", func() { h.applyRaw([]byte{byte(TunablesSetType), '{', 'x'}) })
	bad := h.entry(Command{Type: TunablesSetType, Body: json.RawMessage(`{"tunables":{"queue_frames":"many"}}`)})
	mustPanic(t, "undecodable tunables.set body", func() { h.applyRaw(bad) })
	mustPanic(t, "empty log entry", func() { h.applyRaw(nil) })
}

func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Fatal("no panic")
		}
		if !strings.Contains(fmt.Sprint(r), want) {
			t.Fatalf("panic %q does not mention %q", r, want)
		}
	}()
	f()
}

func TestFSM_RequestIDReplay(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app, _ := testApp("chat")
	create := CreateApp(app)
	create.RequestID = "req-1"
	first := h.mustApply(create)
	after := h.state()
	auditLen := len(after.Audit)

	// The retry is a new log entry (a different index, a later time) with
	// the same request id, as after ErrLeadershipLost.
	resp := h.apply(create)
	if resp.Err != nil {
		t.Fatalf("replay err = %v", resp.Err)
	}
	if !resp.Result.Replayed || resp.Result.Index != first.Index {
		t.Fatalf("replay result = %+v, first %+v", resp.Result, first)
	}
	if h.state() != after || len(h.state().Audit) != auditLen {
		t.Fatal("replay changed the state")
	}

	// A failed command's outcome is remembered too.
	del := DeleteApp("nope")
	del.RequestID = "req-2"
	failed := h.apply(del)
	again := h.apply(del)
	if !errors.Is(again.Err, ErrNotFound) || again.Err.Error() != failed.Err.Error() || !again.Result.Replayed {
		t.Fatalf("replayed failure = %+v %v, first %v", again.Result, again.Err, failed.Err)
	}

	// The same id for another command type is refused.
	other := DegradeOff("x")
	other.RequestID = "req-1"
	if resp := h.apply(other); !errors.Is(resp.Err, ErrConflict) {
		t.Fatalf("reused id err = %v", resp.Err)
	}
	if h.state() != after {
		t.Fatal("reused id changed the state")
	}
}

func TestFSM_RequestMemoryIsBounded(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const extra = 5
	for i := range RequestMemoryLen + extra {
		cmd := SetMemberWeight("n1", i)
		cmd.RequestID = fmt.Sprintf("r%d", i)
		h.apply(cmd) // fails (no member n1); the outcome is remembered anyway
	}
	recs := h.f.requests.records()
	if len(recs) != RequestMemoryLen || recs[0].ID != fmt.Sprintf("r%d", extra) {
		t.Fatalf("memory holds %d, oldest %q", len(recs), recs[0].ID)
	}
	if len(h.f.requests.order) > 2*RequestMemoryLen {
		t.Fatalf("order slice grew to %d", len(h.f.requests.order))
	}
	// The oldest remembered id still replays its failure...
	kept := SetMemberWeight("n1", extra)
	kept.RequestID = fmt.Sprintf("r%d", extra)
	if resp := h.apply(kept); !resp.Result.Replayed || !errors.Is(resp.Err, ErrNotFound) {
		t.Fatalf("remembered id: %+v %v", resp.Result, resp.Err)
	}
	// ...while r0 was forgotten: it applies again, and now succeeds.
	h.mustApply(UpsertMember(Member{ID: "n1", RaftAddr: "10.0.0.1:1"}))
	forgotten := SetMemberWeight("n1", 0)
	forgotten.RequestID = "r0"
	if resp := h.apply(forgotten); resp.Err != nil || resp.Result.Replayed {
		t.Fatalf("forgotten id: %+v %v", resp.Result, resp.Err)
	}
}

func TestFSM_AuditIsAppendedAndBounded(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.mustApply(Command{Type: DegradeOffType, RequestID: "rq", Actor: "alice", Body: DegradeOff("calm").Body})
	e := h.state().Audit[0]
	want := AuditEntry{Index: 1, Time: h.clock, Actor: "alice", Op: "degrade.off", Target: "degrade", Summary: `reason="calm"`, RequestID: "rq"}
	if e != want {
		t.Fatalf("audit = %+v, want %+v", e, want)
	}
	early := h.state()
	earlyAudit := append([]AuditEntry(nil), early.Audit...)

	const n = 2*AuditLen + 7 // cross the buffer's reallocation more than once
	for i := range n {
		h.mustApply(SetTunables(Tunables{QueueFrames: i + 1}))
	}
	audit := h.state().Audit
	if len(audit) != AuditLen {
		t.Fatalf("audit length %d", len(audit))
	}
	if first, last := audit[0].Index, audit[len(audit)-1].Index; last != h.index || first != h.index-AuditLen+1 {
		t.Fatalf("audit spans %d..%d, want %d..%d", first, last, h.index-AuditLen+1, h.index)
	}
	if !reflect.DeepEqual(early.Audit, earlyAudit) {
		t.Fatal("an older state's audit changed")
	}
	// A caller appending to a published window must get a copy, never
	// write into the buffer the FSM appends to.
	if cap(audit) != len(audit) {
		t.Fatalf("published audit has spare capacity %d", cap(audit)-len(audit))
	}
}

// TestFSM_AuditSummaries: each audit entry says what its command set, the
// same on every node, bounded, and without secrets, API keys or token
// hashes.
func TestFSM_AuditSummaries(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A second FSM applying the same entries: the summaries come from the
	// log alone.
	other := newFSM(nil)
	apply := func(cmd Command) AuditEntry {
		t.Helper()
		data := h.entry(cmd)
		if resp := h.applyRaw(data); resp.Err != nil {
			t.Fatalf("apply %s: %v", cmd.Type, resp.Err)
		}
		other.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data})
		audit := h.state().Audit
		return audit[len(audit)-1]
	}

	app, apiKey := testApp("chat")
	e := apply(CreateApp(app))
	if want := "secret_key_id=s1 api_keys=[k1] max_payload=8192 rate_per_sec=100 burst=200 businesses=[chat]"; e.Summary != want {
		t.Errorf("app.create summary %q, want %q", e.Summary, want)
	}
	e = apply(SetDegrade(Degrade{Priority: PriorityLow, Businesses: []string{"chat", "news"}, Reason: `surge "eu"`}))
	if want := `priority=low businesses=[chat,news] reason="surge \"eu\""`; e.Summary != want {
		t.Errorf("degrade.set summary %q, want %q", e.Summary, want)
	}
	e = apply(SetAppLimits("chat", AppLimits{MaxPayload: 1024, RatePerSec: 50, Burst: 60}))
	if want := "max_payload=1024 rate_per_sec=50 burst=60 businesses=[]"; e.Summary != want {
		t.Errorf("app.set-limits summary %q, want %q", e.Summary, want)
	}
	e = apply(UpsertMember(Member{ID: "n1", RaftAddr: "10.0.0.1:7000", AdminAddr: "10.0.0.1:9090", Weight: 100, Voter: true}))
	if want := "raft_addr=10.0.0.1:7000 admin_addr=10.0.0.1:9090 voter=true weight=100 draining=false"; e.Summary != want {
		t.Errorf("member.upsert summary %q, want %q", e.Summary, want)
	}
	if e := apply(SetMemberDrain("n1", true)); e.Summary != "draining=true" {
		t.Errorf("member.drain summary %q", e.Summary)
	}
	if e := apply(SetMemberWeight("n1", 0)); e.Summary != "weight=0" {
		t.Errorf("member.weight summary %q", e.Summary)
	}
	if e := apply(SetMemberVoter("n1", false)); e.Summary != "voter=false" {
		t.Errorf("member.voter summary %q", e.Summary)
	}

	secret := NewSecret("s2")
	e = apply(RotateAppSecret("chat", secret))
	if e.Summary != "secret_key_id=s2" {
		t.Errorf("app.rotate-secret summary %q", e.Summary)
	}
	newKey, k := NewAPIKey("k2")
	apply(AddAPIKey("chat", k))
	tok, at := NewAdminToken("ops", RoleOperator)
	if e := apply(CreateAdminToken(at)); e.Summary != "role=operator" {
		t.Errorf("admin-token.create summary %q", e.Summary)
	}
	// No credential in any form reaches the audit.
	raw, err := json.Marshal(h.state().Audit)
	if err != nil {
		t.Fatal(err)
	}
	hash := HashKey(newKey)
	for what, v := range map[string][]byte{
		"secret": secret.Secret, "first secret": app.Secrets[0].Secret,
		"API key hash": hash[:], "admin token hash": at.Hash[:],
	} {
		enc, _ := json.Marshal(v) // []byte marshals as base64
		if bytes.Contains(raw, bytes.Trim(enc, `"`)) || bytes.Contains(raw, []byte(fmt.Sprintf("%x", v))) {
			t.Errorf("the audit holds the %s", what)
		}
	}
	for what, v := range map[string]string{"API key": newKey, "first API key": apiKey, "admin token": tok} {
		if bytes.Contains(raw, []byte(v)) {
			t.Errorf("the audit holds the %s", what)
		}
	}

	// Bounded: 256 businesses of 64 bytes are cut at 256 bytes.
	long := make([]string, maxListLen)
	for i := range long {
		long[i] = fmt.Sprintf("%064d", i)
	}
	e = apply(SetDegrade(Degrade{Priority: PriorityHigh, Businesses: long, Reason: strings.Repeat("é", 128)}))
	if len(e.Summary) != maxSummaryLen || !strings.HasSuffix(e.Summary, "...") || !utf8.ValidString(e.Summary) {
		t.Errorf("long summary: %d bytes, %q", len(e.Summary), e.Summary[len(e.Summary)-8:])
	}
	if s := clipSummary(strings.Repeat("é", 200)); len(s) > maxSummaryLen || !utf8.ValidString(s) {
		t.Errorf("clip cut a character: %d bytes", len(s))
	}

	if !reflect.DeepEqual(other.State().Audit, h.state().Audit) {
		t.Error("two FSMs applying the same log recorded different audits")
	}
}

func TestFSM_StatesAreImmutable(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app, _ := testApp("chat")
	h.mustApply(CreateApp(app))
	h.mustApply(UpsertMember(Member{ID: "n1", RaftAddr: "10.0.0.1:7000"}))
	old := h.state()
	frozen := old.Clone()

	h.mustApply(RotateAppSecret("chat", NewSecret("s2")))
	_, k := NewAPIKey("k2")
	h.mustApply(AddAPIKey("chat", k))
	h.mustApply(RevokeAPIKey("chat", "k1"))
	h.mustApply(SetAppLimits("chat", AppLimits{Businesses: []string{"x"}}))
	h.mustApply(SetMemberDrain("n1", true))
	h.mustApply(SetDegrade(Degrade{Priority: PriorityLow}))
	h.mustApply(DeleteApp("chat"))

	if !reflect.DeepEqual(old, frozen) {
		t.Fatal("an older state changed under later applies")
	}
	if old.Members["n1"].Draining || len(old.Apps) != 1 {
		t.Fatal("older state sees later changes")
	}
}

func TestCommand_CheckRefusesWhatTheFSMWouldPanicOn(t *testing.T) {
	t.Parallel()
	now := time.Now()
	cases := []struct {
		name string
		cmd  Command
	}{
		{"unknown type", Command{Type: 99, Time: now, Body: json.RawMessage(`{}`)}},
		{"unknown optional type", Command{Type: 99 | IgnoreUnknownTypeFlag, Time: now}},
		{"wrong field type", Command{Type: TunablesSetType, Time: now, Body: json.RawMessage(`{"tunables":{"queue_frames":"x"}}`)}},
		{"unknown field", Command{Type: DegradeOffType, Time: now, Body: json.RawMessage(`{"reason":"x","force":true}`)}},
		{"not json", Command{Type: DegradeOffType, Time: now, Body: json.RawMessage(`{`)}},
		{"invalid body", Command{Type: MemberRemoveType, Time: now, Body: json.RawMessage(`{"id":""}`)}},
	}
	for _, tc := range cases {
		if err := tc.cmd.check(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: check = %v, want ErrInvalid", tc.name, err)
		}
	}
	ok := SetDegrade(Degrade{Priority: PriorityNormal})
	ok.Time = now
	if err := ok.check(); err != nil {
		t.Fatalf("valid command refused: %v", err)
	}
}

func TestCommand_JSONRoundTrip(t *testing.T) {
	t.Parallel()
	// The appliance forwards commands to the leader as JSON.
	app, _ := testApp("chat")
	cmd := CreateApp(app)
	cmd.RequestID, cmd.Actor, cmd.Time = "r1", "alice", time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	b, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	var back Command
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Type != cmd.Type || back.RequestID != cmd.RequestID || back.Actor != cmd.Actor ||
		!back.Time.Equal(cmd.Time) || !bytes.Equal(back.Body, cmd.Body) {
		t.Fatalf("round trip: %+v != %+v", back, cmd)
	}
}

func TestRole_Allows(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		have, need Role
		ok         bool
	}{
		{RoleAdmin, RoleOperator, true},
		{RoleOperator, RoleOperator, true},
		{RoleViewer, RoleOperator, false},
		{RoleOperator, RoleAdmin, false},
		{"root", RoleViewer, false},
		{RoleAdmin, "root", false},
	} {
		if got := tc.have.Allows(tc.need); got != tc.ok {
			t.Errorf("%q.Allows(%q) = %v", tc.have, tc.need, got)
		}
	}
}

func TestState_CloneIsDeep(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	app, _ := testApp("chat")
	h.mustApply(CreateApp(app))
	h.mustApply(SetDegrade(Degrade{Priority: PriorityLow, Businesses: []string{"a"}}))
	st := h.state()
	c := st.Clone()
	if !reflect.DeepEqual(c, st) {
		t.Fatal("clone differs")
	}
	a := c.Apps["chat"]
	a.Secrets[0].Secret[0] ^= 0xff
	a.Businesses[0] = "changed"
	c.Degrade.Businesses[0] = "changed"
	c.Audit[0].Actor = "changed"
	c.Members["x"] = Member{}
	if st.Apps["chat"].Secrets[0].Secret[0] == a.Secrets[0].Secret[0] || st.Apps["chat"].Businesses[0] == "changed" ||
		st.Degrade.Businesses[0] == "changed" || st.Audit[0].Actor == "changed" || len(st.Members) != 0 {
		t.Fatal("modifying the clone changed the original")
	}
}
