package raftmeta

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"

	"github.com/hashicorp/raft"
)

// snapshotFormat is the version of snapshotDoc. A node refuses a snapshot
// with a higher format rather than restoring part of it.
const snapshotFormat = 1

// snapshotDoc is a snapshot: one JSON document holding the state and the
// request-id memory. encoding/json writes map keys sorted, so the encoding
// of a given FSM content is canonical (digest relies on that).
type snapshotDoc struct {
	Format   int             `json:"format"`
	State    *State          `json:"state"`
	Requests []requestRecord `json:"requests"`
	// Applied is the fsm's applied index (the last command it applied);
	// zero in snapshots written before it was recorded, where
	// State.Index, the last command that changed the state, stands in.
	Applied uint64 `json:"applied,omitempty"`
}

// fsmSnapshot is a point-in-time view taken on raft's apply goroutine and
// persisted on another one; it holds an immutable State and its own copy
// of the request memory, so applies may continue meanwhile.
type fsmSnapshot struct {
	doc snapshotDoc
}

// Snapshot implements raft.FSM.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{doc: f.snapshotDoc()}, nil
}

func (f *fsm) snapshotDoc() snapshotDoc {
	f.mu.Lock()
	defer f.mu.Unlock()
	return snapshotDoc{Format: snapshotFormat, State: f.state.Load(), Requests: f.requests.records(), Applied: f.applied.Load()}
}

// Persist implements raft.FSMSnapshot.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriter(sink)
	err := json.NewEncoder(w).Encode(&s.doc)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return nil
}

// Release implements raft.FSMSnapshot; the view holds no resources.
func (s *fsmSnapshot) Release() {}

// Restore implements raft.FSM: it replaces the whole content with the
// snapshot's, as raft requires.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	doc, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.install(doc.State, doc.Requests)
	f.mu.Unlock()
	if doc.Applied == 0 {
		doc.Applied = doc.State.Index
	}
	f.applied.Store(doc.Applied)
	f.onChange()
	return nil
}

func readSnapshot(r io.Reader) (snapshotDoc, error) {
	var doc snapshotDoc
	if err := json.NewDecoder(bufio.NewReader(r)).Decode(&doc); err != nil {
		return doc, fmt.Errorf("restore snapshot: %w", err)
	}
	if doc.Format != snapshotFormat {
		return doc, fmt.Errorf("restore snapshot: format %d, this version reads %d: %w", doc.Format, snapshotFormat, ErrInvalid)
	}
	if doc.State == nil {
		doc.State = newState()
	}
	return doc, nil
}

// digest is the SHA-256 of the canonical snapshot encoding: equal digests
// mean equal FSM content, request memory included.
func (f *fsm) digest() string {
	doc := f.snapshotDoc()
	b, err := json.Marshal(&doc)
	if err != nil {
		// Every time in the state passed the envelope's year check, so
		// the document always encodes; report the failure as a digest
		// that can never match another node's.
		return "unencodable: " + err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
