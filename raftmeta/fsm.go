package raftmeta

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/hashicorp/raft"
)

// commands is the dispatch table: for each known type, a constructor of
// its body, whose validate and apply methods do the work. A type missing
// here is unknown to this version (see IgnoreUnknownTypeFlag).
var commands = map[MessageType]func() commandBody{
	MemberUpsertType:       func() commandBody { return new(memberUpsertBody) },
	MemberRemoveType:       func() commandBody { return new(memberIDBody) },
	MemberDrainType:        func() commandBody { return new(memberDrainBody) },
	MemberWeightType:       func() commandBody { return new(memberWeightBody) },
	AppCreateType:          func() commandBody { return new(appCreateBody) },
	AppDeleteType:          func() commandBody { return new(appIDBody) },
	AppRotateSecretType:    func() commandBody { return new(appSecretBody) },
	AppAddAPIKeyType:       func() commandBody { return new(appKeyBody) },
	AppRevokeAPIKeyType:    func() commandBody { return new(appKeyIDBody) },
	AppSetLimitsType:       func() commandBody { return new(appLimitsBody) },
	DegradeSetType:         func() commandBody { return new(degradeSetBody) },
	DegradeOffType:         func() commandBody { return new(degradeOffBody) },
	TunablesSetType:        func() commandBody { return new(tunablesBody) },
	AdminTokenCreateType:   func() commandBody { return new(tokenCreateBody) },
	AdminTokenRevokeType:   func() commandBody { return new(tokenIDBody) },
	MemberVoterType:        func() commandBody { return new(memberVoterBody) },
	AppSetClientGroupsType: func() commandBody { return new(appClientGroupsBody) },
}

// applyResponse is what fsm.Apply returns to raft, which hands it to the
// ApplyFuture on the leader.
type applyResponse struct {
	Result Result
	Err    error
}

// fsm is the raft.FSM. Raft calls Apply, Snapshot and Restore from one
// goroutine; the current State is published through an atomic pointer so
// readers never lock. The FSM does no I/O (it does not log either) and
// never reads the clock: every node computes the same state from the same
// log.
type fsm struct {
	// onChange is called, without locks held, after a new State is
	// published (an applied change or a restore).
	onChange func()

	state atomic.Pointer[State]
	// skipped counts entries of unknown optional types passed over; the
	// Store reports it in Stats. It is not part of the state: a node that
	// knows the type applies the entry instead.
	skipped atomic.Uint64
	// applied is the index of the last log entry the FSM applied: a
	// command, whether it changed the state, was refused or skipped.
	// Raft's own entries (barriers, no-ops, configuration) never reach
	// the FSM, so this can trail raft's applied index; Sync waits on it.
	applied atomic.Uint64

	// mu guards requests and auditBuf, and makes (state, requests) change
	// together, for digest and Snapshot, which read them from other
	// goroutines than raft's apply goroutine.
	mu       sync.Mutex
	requests *requestMemory
	// auditBuf backs the published State.Audit windows. Each window is
	// capped at its own length, and appends write only past the newest
	// window's end, so published states never see a write.
	auditBuf []AuditEntry
}

func newFSM(onChange func()) *fsm {
	if onChange == nil {
		onChange = func() {}
	}
	f := &fsm{onChange: onChange, requests: newRequestMemory()}
	f.state.Store(newState())
	return f
}

// State returns the current immutable state.
func (f *fsm) State() *State { return f.state.Load() }

// Apply applies one committed log entry. It panics on an entry it cannot
// decode or whose type it does not know (without IgnoreUnknownTypeFlag):
// skipping it would make this node's state silently differ from the rest.
func (f *fsm) Apply(l *raft.Log) any {
	resp, changed := f.apply(l.Index, l.Data)
	f.applied.Store(l.Index)
	if changed {
		f.onChange()
	}
	return resp
}

func (f *fsm) apply(index uint64, data []byte) (*applyResponse, bool) {
	if len(data) == 0 {
		panic(fmt.Sprintf("raftmeta: empty log entry at index %d", index))
	}
	typ := MessageType(data[0])
	newBody, known := commands[typ&^IgnoreUnknownTypeFlag]
	if !known {
		if typ&IgnoreUnknownTypeFlag != 0 {
			f.skipped.Add(1)
			return &applyResponse{Result: Result{Index: index}}, false
		}
		panic(fmt.Sprintf("raftmeta: unknown command type %d at index %d: the log was written by a newer version; upgrade this node", uint8(typ), index))
	}
	cmd, err := decodeEntry(data)
	if err != nil {
		panic(fmt.Sprintf("raftmeta: undecodable log entry at index %d: %v", index, err))
	}
	body := newBody()
	if len(cmd.Body) > 0 {
		// Lenient on purpose (unlike Command.check): fields added by a newer
		// leader are ignored, which the body compatibility rule makes safe.
		if err := json.Unmarshal(cmd.Body, body); err != nil {
			panic(fmt.Sprintf("raftmeta: undecodable %s body at index %d: %v", typ, index, err))
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if err := checkEnvelope(cmd); err != nil {
		return &applyResponse{Result: Result{Index: index}, Err: err}, false
	}
	if cmd.RequestID != "" {
		if rec, ok := f.requests.get(cmd.RequestID); ok {
			if rec.Type != typ {
				return &applyResponse{Result: Result{Index: index},
					Err: failf(ErrConflict, "request id %q already used for %s", cmd.RequestID, rec.Type)}, false
			}
			return &applyResponse{Result: Result{Index: rec.Index, Replayed: true}, Err: rec.err()}, false
		}
	}
	err = f.run(index, typ, cmd, body)
	if cmd.RequestID != "" {
		f.requests.add(newRequestRecord(cmd.RequestID, typ, index, err))
	}
	return &applyResponse{Result: Result{Index: index}, Err: err}, err == nil
}

// checkEnvelope repeats the proposer's envelope checks: the FSM must not
// depend on every proposer being well behaved to keep its memory bounded
// and its snapshots encodable.
func checkEnvelope(cmd Command) error {
	switch {
	case len(cmd.RequestID) > maxRequestIDLen:
		return failf(ErrInvalid, "request id of %d bytes", len(cmd.RequestID))
	case len(cmd.Actor) > maxActorLen:
		return failf(ErrInvalid, "actor of %d bytes", len(cmd.Actor))
	case cmd.Time.Year() < 1 || cmd.Time.Year() > 9999:
		return failf(ErrInvalid, "command time %v", cmd.Time)
	}
	return nil
}

// run applies a decoded command to a copy of the current state and, if it
// succeeds, publishes the copy. A failing command publishes nothing.
// f.mu must be held.
func (f *fsm) run(index uint64, typ MessageType, cmd Command, body commandBody) error {
	if err := body.validate(); err != nil {
		return err
	}
	t := newTxn(f.state.Load(), cmd.Time.UTC(), cmd.Actor)
	if err := body.apply(t); err != nil {
		return err
	}
	next := t.next
	next.Index = index
	next.Audit = f.appendAudit(AuditEntry{
		Index: index, Time: t.now, Actor: cmd.Actor, Op: typ.String(), Target: t.target,
		Summary: clipSummary(body.summary()), RequestID: cmd.RequestID,
	})
	f.state.Store(next)
	return nil
}

// appendAudit adds e to the audit buffer and returns the window of the
// last AuditLen entries for the new state. When the buffer is full the
// window moves to a fresh buffer (twice AuditLen), so copying is amortized.
// f.mu must be held.
func (f *fsm) appendAudit(e AuditEntry) []AuditEntry {
	if len(f.auditBuf) == cap(f.auditBuf) {
		keep := f.auditBuf[max(0, len(f.auditBuf)-(AuditLen-1)):]
		buf := make([]AuditEntry, len(keep), 2*AuditLen)
		copy(buf, keep)
		f.auditBuf = buf
	}
	f.auditBuf = append(f.auditBuf, e)
	n := len(f.auditBuf)
	return f.auditBuf[max(0, n-AuditLen):n:n]
}

// install replaces the whole FSM content (Restore). f.mu must be held.
func (f *fsm) install(st *State, records []requestRecord) {
	st.normalize()
	if len(st.Audit) > AuditLen {
		st.Audit = st.Audit[len(st.Audit)-AuditLen:]
	}
	buf := make([]AuditEntry, len(st.Audit), 2*AuditLen)
	copy(buf, st.Audit)
	f.auditBuf = buf
	if len(buf) == 0 {
		st.Audit = nil
	} else {
		st.Audit = buf[:len(buf):len(buf)]
	}
	f.requests = newRequestMemory()
	for _, r := range records {
		f.requests.add(r)
	}
	f.state.Store(st)
}

func (b *memberUpsertBody) apply(t *txn) error {
	m := b.Member
	for id, o := range t.next.Members {
		if id != m.ID && o.RaftAddr == m.RaftAddr {
			return failf(ErrConflict, "member %q raft address %s is member %q's", m.ID, m.RaftAddr, id)
		}
	}
	members := t.members()
	if old, ok := members[m.ID]; ok {
		m.Joined, m.Draining = old.Joined, old.Draining
	} else {
		m.Joined = t.now
	}
	members[m.ID] = m
	t.target = m.ID
	return nil
}

func (b *memberIDBody) apply(t *txn) error {
	if _, ok := t.next.Members[b.ID]; !ok {
		return failf(ErrNotFound, "member %q", b.ID)
	}
	delete(t.members(), b.ID)
	t.target = b.ID
	return nil
}

func (b *memberDrainBody) apply(t *txn) error {
	return t.updateMember(b.ID, func(m *Member) { m.Draining = b.Draining })
}

func (b *memberVoterBody) apply(t *txn) error {
	return t.updateMember(b.ID, func(m *Member) { m.Voter = b.Voter })
}

func (b *memberWeightBody) apply(t *txn) error {
	return t.updateMember(b.ID, func(m *Member) { m.Weight = b.Weight })
}

// updateMember changes one field of an existing member record.
func (t *txn) updateMember(id string, set func(*Member)) error {
	m, ok := t.next.Members[id]
	if !ok {
		return failf(ErrNotFound, "member %q", id)
	}
	set(&m)
	t.members()[id] = m
	t.target = id
	return nil
}

func (b *appCreateBody) apply(t *txn) error {
	a := b.App
	if _, ok := t.next.Apps[a.ID]; ok {
		return failf(ErrConflict, "app %q exists", a.ID)
	}
	// The body was decoded for this apply alone, so its slices are not
	// shared with anything and can be stored as they are.
	a.Created = t.now
	a.Secrets[0].Created = t.now
	for i := range a.APIKeys {
		a.APIKeys[i].Created = t.now
	}
	t.apps()[a.ID] = a
	t.target = a.ID
	return nil
}

func (b *appIDBody) apply(t *txn) error {
	if _, ok := t.next.Apps[b.AppID]; !ok {
		return failf(ErrNotFound, "app %q", b.AppID)
	}
	delete(t.apps(), b.AppID)
	t.target = b.AppID
	return nil
}

func (b *appSecretBody) apply(t *txn) error {
	a, ok := t.next.Apps[b.AppID]
	if !ok {
		return failf(ErrNotFound, "app %q", b.AppID)
	}
	for _, s := range a.Secrets {
		if s.KeyID == b.Secret.KeyID {
			return failf(ErrConflict, "app %q secret key id %q exists", b.AppID, s.KeyID)
		}
	}
	s := b.Secret
	s.Created = t.now
	secrets := make([]Secret, 0, 1+MaxOldSecrets)
	secrets = append(secrets, s)
	secrets = append(secrets, a.Secrets[:min(len(a.Secrets), MaxOldSecrets)]...)
	a.Secrets = secrets
	t.apps()[a.ID] = a
	t.target = a.ID + "/" + s.KeyID
	return nil
}

func (b *appKeyBody) apply(t *txn) error {
	a, ok := t.next.Apps[b.AppID]
	if !ok {
		return failf(ErrNotFound, "app %q", b.AppID)
	}
	for _, k := range a.APIKeys {
		if k.ID == b.Key.ID {
			return failf(ErrConflict, "app %q API key %q exists", a.ID, k.ID)
		}
		if k.Hash == b.Key.Hash {
			return failf(ErrConflict, "app %q already has this key as %q", a.ID, k.ID)
		}
	}
	if len(a.APIKeys) >= MaxAPIKeys {
		return failf(ErrInvalid, "app %q has %d API keys, the most allowed", a.ID, len(a.APIKeys))
	}
	k := b.Key
	k.Created = t.now
	keys := make([]APIKey, 0, len(a.APIKeys)+1)
	keys = append(keys, a.APIKeys...)
	a.APIKeys = append(keys, k)
	t.apps()[a.ID] = a
	t.target = a.ID + "/" + k.ID
	return nil
}

func (b *appKeyIDBody) apply(t *txn) error {
	a, ok := t.next.Apps[b.AppID]
	if !ok {
		return failf(ErrNotFound, "app %q", b.AppID)
	}
	keys := make([]APIKey, 0, len(a.APIKeys))
	for _, k := range a.APIKeys {
		if k.ID != b.KeyID {
			keys = append(keys, k)
		}
	}
	if len(keys) == len(a.APIKeys) {
		return failf(ErrNotFound, "app %q API key %q", a.ID, b.KeyID)
	}
	a.APIKeys = keys
	t.apps()[a.ID] = a
	t.target = a.ID + "/" + b.KeyID
	return nil
}

func (b *appLimitsBody) apply(t *txn) error {
	a, ok := t.next.Apps[b.AppID]
	if !ok {
		return failf(ErrNotFound, "app %q", b.AppID)
	}
	a.MaxPayload = b.Limits.MaxPayload
	a.RatePerSec = b.Limits.RatePerSec
	a.Burst = b.Limits.Burst
	a.Businesses = b.Limits.Businesses
	t.apps()[a.ID] = a
	t.target = a.ID
	return nil
}

func (b *appClientGroupsBody) apply(t *txn) error {
	a, ok := t.next.Apps[b.AppID]
	if !ok {
		return failf(ErrNotFound, "app %q", b.AppID)
	}
	a.ClientGroupsOff = !b.Allow
	t.apps()[a.ID] = a
	t.target = a.ID
	return nil
}

func (b *degradeSetBody) apply(t *txn) error {
	t.next.Degrade = Degrade{
		Active: true, Priority: b.Priority, Businesses: b.Businesses,
		Reason: b.Reason, By: t.actor, Since: t.now,
	}
	t.target = "degrade"
	return nil
}

func (b *degradeOffBody) apply(t *txn) error {
	t.next.Degrade = Degrade{Reason: b.Reason, By: t.actor, Since: t.now}
	t.target = "degrade"
	return nil
}

func (b *tunablesBody) apply(t *txn) error {
	cur, set := &t.next.Tunables, b.Tunables
	setIfGiven(&cur.InboxMaxLen, set.InboxMaxLen)
	setIfGiven(&cur.InboxTTL, set.InboxTTL)
	setIfGiven(&cur.AckTimeout, set.AckTimeout)
	setIfGiven(&cur.AckBackoffMax, set.AckBackoffMax)
	setIfGiven(&cur.InFlightWindow, set.InFlightWindow)
	setIfGiven(&cur.QueueFrames, set.QueueFrames)
	setIfGiven(&cur.QueueBytes, set.QueueBytes)
	t.target = "tunables"
	return nil
}

// setIfGiven sets *dst to v unless v is zero: tunables.set merges only
// the fields a command gives.
func setIfGiven[T comparable](dst *T, v T) {
	var zero T
	if v != zero {
		*dst = v
	}
}

func (b *tokenCreateBody) apply(t *txn) error {
	tok := b.Token
	for id, o := range t.next.AdminTokens {
		if id == tok.ID {
			return failf(ErrConflict, "admin token %q exists", id)
		}
		if o.Hash == tok.Hash {
			return failf(ErrConflict, "admin token already stored as %q", id)
		}
	}
	tok.Created = t.now
	t.tokens()[tok.ID] = tok
	t.target = tok.ID
	return nil
}

func (b *tokenIDBody) apply(t *txn) error {
	if _, ok := t.next.AdminTokens[b.ID]; !ok {
		return failf(ErrNotFound, "admin token %q", b.ID)
	}
	delete(t.tokens(), b.ID)
	t.target = b.ID
	return nil
}

// Audit summaries: what a command set, in "key=value" words, computed
// from the body alone (deterministic on every node) and clipped to
// maxSummaryLen. They never hold a secret, an API key or a token hash:
// ids and roles only.

// maxSummaryLen bounds AuditEntry.Summary in bytes.
const maxSummaryLen = 256

// clipSummary cuts s to maxSummaryLen bytes at a character boundary,
// marking the cut with "...".
func clipSummary(s string) string {
	if len(s) <= maxSummaryLen {
		return s
	}
	cut := maxSummaryLen - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// words joins "key=value" pairs, leaving out pairs with an empty value.
func words(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv[i])
		b.WriteByte('=')
		b.WriteString(kv[i+1])
	}
	return b.String()
}

// list renders names as [a,b]; [] is "none listed".
func list(names []string) string { return "[" + strings.Join(names, ",") + "]" }

func itoa(i int) string { return strconv.Itoa(i) }

func (b *memberUpsertBody) summary() string {
	m := b.Member
	return words("raft_addr", m.RaftAddr, "admin_addr", m.AdminAddr, "voter", strconv.FormatBool(m.Voter),
		"weight", itoa(m.Weight), "draining", strconv.FormatBool(m.Draining),
		"device_addr", m.DeviceAddr, "tcp_addr", m.TCPAddr, "push_addr", m.PushAddr)
}

func (b *memberIDBody) summary() string { return "" }

func (b *memberDrainBody) summary() string { return words("draining", strconv.FormatBool(b.Draining)) }

func (b *memberWeightBody) summary() string { return words("weight", itoa(b.Weight)) }

func (b *memberVoterBody) summary() string { return words("voter", strconv.FormatBool(b.Voter)) }

func (b *appCreateBody) summary() string {
	a := b.App
	keys := make([]string, len(a.APIKeys))
	for i, k := range a.APIKeys {
		keys[i] = k.ID
	}
	secret := ""
	if len(a.Secrets) > 0 {
		secret = a.Secrets[0].KeyID
	}
	return words("secret_key_id", secret, "api_keys", list(keys)) + " " + limitsSummary(a.AppLimits)
}

func (b *appIDBody) summary() string { return "" }

func (b *appSecretBody) summary() string { return words("secret_key_id", b.Secret.KeyID) }

func (b *appKeyBody) summary() string { return words("api_key", b.Key.ID) }

func (b *appKeyIDBody) summary() string { return "" }

func (b *appLimitsBody) summary() string { return limitsSummary(b.Limits) }

func (b *appClientGroupsBody) summary() string { return words("allow", strconv.FormatBool(b.Allow)) }

func limitsSummary(l AppLimits) string {
	return words("max_payload", itoa(l.MaxPayload), "rate_per_sec", itoa(l.RatePerSec), "burst", itoa(l.Burst),
		"businesses", list(l.Businesses))
}

func (b *degradeSetBody) summary() string {
	return words("priority", b.Priority.String(), "businesses", list(b.Businesses), "reason", strconv.Quote(b.Reason))
}

func (b *degradeOffBody) summary() string { return words("reason", strconv.Quote(b.Reason)) }

// summary prints every tunable by its field name; fmt formats the
// durations, so this follows the Tunables type as it changes.
func (b *tunablesBody) summary() string { return fmt.Sprintf("%+v", b.Tunables) }

func (b *tokenCreateBody) summary() string { return words("role", string(b.Token.Role)) }

func (b *tokenIDBody) summary() string { return "" }

// requestRecord is the remembered outcome of one request id.
type requestRecord struct {
	ID    string      `json:"id"`
	Type  MessageType `json:"type"`
	Index uint64      `json:"index"`
	// Code is "" for success, else the sentinel's code (errorCodes).
	Code string `json:"code,omitempty"`
	Msg  string `json:"msg,omitempty"`
}

func newRequestRecord(id string, typ MessageType, index uint64, err error) requestRecord {
	r := requestRecord{ID: id, Type: typ, Index: index}
	if err != nil {
		r.Code = errorCode(err)
		r.Msg = err.Error()
	}
	return r
}

func (r requestRecord) err() error {
	if r.Code == "" {
		return nil
	}
	return errorFromCode(r.Code, r.Msg)
}

// requestMemory remembers the outcome of the last RequestMemoryLen request
// ids, forgetting the oldest first.
type requestMemory struct {
	byID  map[string]requestRecord
	order []string // oldest first, from head
	head  int
}

func newRequestMemory() *requestMemory {
	return &requestMemory{byID: map[string]requestRecord{}}
}

func (m *requestMemory) get(id string) (requestRecord, bool) {
	r, ok := m.byID[id]
	return r, ok
}

func (m *requestMemory) add(r requestRecord) {
	if _, dup := m.byID[r.ID]; dup {
		// Only a snapshot could list an id twice; keep the first outcome,
		// as the FSM would have.
		return
	}
	m.byID[r.ID] = r
	m.order = append(m.order, r.ID)
	for len(m.order)-m.head > RequestMemoryLen {
		delete(m.byID, m.order[m.head])
		m.order[m.head] = ""
		m.head++
	}
	// Reclaim the consumed prefix once it is as long as the live part, so
	// the slice stays within twice the bound.
	if m.head > 0 && m.head >= len(m.order)-m.head {
		m.order = append([]string(nil), m.order[m.head:]...)
		m.head = 0
	}
}

// records returns the remembered outcomes, oldest first.
func (m *requestMemory) records() []requestRecord {
	out := make([]requestRecord, 0, len(m.order)-m.head)
	for _, id := range m.order[m.head:] {
		out = append(out, m.byID[id])
	}
	return out
}
