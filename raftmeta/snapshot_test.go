package raftmeta

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, canceled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.canceled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

// richHarness builds an FSM holding some of everything, including failed
// and replayable request ids.
func richHarness(t *testing.T) *harness {
	h := newHarness(t)
	for _, id := range []string{"chat", "news", "iot"} {
		app, _ := testApp(id)
		h.mustApply(CreateApp(app))
	}
	h.mustApply(RotateAppSecret("chat", NewSecret("s2")))
	h.mustApply(SetAppLimits("news", AppLimits{}))
	h.mustApply(SetAppClientGroups("iot", false))
	h.mustApply(UpsertMember(Member{ID: "n1", RaftAddr: "10.0.0.1:7000", Voter: true, Weight: 3}))
	h.mustApply(UpsertMember(Member{ID: "n2", RaftAddr: "10.0.0.2:7000"}))
	h.mustApply(SetMemberDrain("n2", true))
	h.mustApply(SetDegrade(Degrade{Priority: PriorityNormal, Reason: "test"}))
	h.mustApply(SetTunables(Tunables{InboxTTL: time.Hour, QueueBytes: 1 << 20}))
	_, tok := NewAdminToken("root", RoleAdmin)
	h.mustApply(CreateAdminToken(tok))
	h.apply(DeleteApp("missing")) // a remembered failure
	return h
}

func TestSnapshot_RestoreRoundTrip(t *testing.T) {
	t.Parallel()
	h := richHarness(t)
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.canceled {
		t.Fatalf("sink closed=%v canceled=%v", sink.closed, sink.canceled)
	}

	restored := newHarness(t)
	if err := restored.f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(restored.state(), h.state()) {
		t.Fatalf("restored state differs:\n got %+v\nwant %+v", restored.state(), h.state())
	}
	if got, want := restored.f.requests.records(), h.f.requests.records(); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored request memory differs: %d vs %d records", len(got), len(want))
	}
	if restored.f.digest() != h.f.digest() {
		t.Fatal("digests differ")
	}
	if restored.changes != 1 {
		t.Fatalf("restore notified %d changes, want 1", restored.changes)
	}

	// Both go on identically: a replay is recognized after the restore,
	// and new commands produce equal states.
	for _, x := range []*harness{h, restored} {
		x.index = 100
		x.clock = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	replay := DeleteApp("missing")
	replay.RequestID = h.f.requests.records()[len(h.f.requests.records())-1].ID
	if resp := restored.apply(replay); !resp.Result.Replayed || !errors.Is(resp.Err, ErrNotFound) {
		t.Fatalf("replay after restore: %+v %v", resp.Result, resp.Err)
	}
	h.apply(replay)
	for _, x := range []*harness{h, restored} {
		cmd := SetMemberWeight("n1", 42)
		cmd.RequestID = "after"
		x.mustApply(cmd)
	}
	if !reflect.DeepEqual(restored.state(), h.state()) || restored.f.digest() != h.f.digest() {
		t.Fatal("states diverged after the restore")
	}
}

func TestSnapshot_EmptyFSMRoundTrip(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	snap, _ := h.f.Snapshot()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	restored := newHarness(t)
	if err := restored.f.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(restored.state(), h.state()) {
		t.Fatalf("got %+v want %+v", restored.state(), h.state())
	}
}

func TestSnapshot_RestoreReplacesEverything(t *testing.T) {
	t.Parallel()
	src := newHarness(t)
	src.mustApply(SetTunables(Tunables{QueueFrames: 1}))
	snap, _ := src.f.Snapshot()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	dst := richHarness(t)
	if err := dst.f.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(dst.state(), src.state()) || dst.f.digest() != src.f.digest() {
		t.Fatal("restore left old content behind")
	}
}

func TestSnapshot_RefusesNewerFormatAndGarbage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	err := h.f.Restore(io.NopCloser(strings.NewReader(`{"format":2,"state":{}}`)))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("newer format: %v", err)
	}
	if err := h.f.Restore(io.NopCloser(strings.NewReader(`{"format":`))); err == nil {
		t.Fatal("truncated snapshot accepted")
	}
}
