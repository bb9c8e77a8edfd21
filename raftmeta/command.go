package raftmeta

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// MessageType identifies the command in a log entry. The values are
// written to the raft log and to snapshots' request memory, so they are
// append-only: never renumber, never reuse a retired value.
type MessageType uint8

// IgnoreUnknownTypeFlag marks a command that nodes which do not know its
// type may skip. A newer leader sets it on commands whose loss on an older
// follower is harmless. An unknown type without the flag stops the FSM
// (panic): the log holds something this version cannot apply, and applying
// everything around it would silently diverge from the other nodes.
const IgnoreUnknownTypeFlag MessageType = 128

// The command types. Append new ones at the end with the next free number.
const (
	MemberUpsertType     MessageType = 1
	MemberRemoveType     MessageType = 2
	MemberDrainType      MessageType = 3
	MemberWeightType     MessageType = 4
	AppCreateType        MessageType = 5
	AppDeleteType        MessageType = 6
	AppRotateSecretType  MessageType = 7
	AppAddAPIKeyType     MessageType = 8
	AppRevokeAPIKeyType  MessageType = 9
	AppSetLimitsType     MessageType = 10
	DegradeSetType       MessageType = 11
	DegradeOffType       MessageType = 12
	TunablesSetType      MessageType = 13
	AdminTokenCreateType MessageType = 14
	AdminTokenRevokeType MessageType = 15
	MemberVoterType      MessageType = 16
	// AppSetClientGroupsType is mandatory (no IgnoreUnknownTypeFlag): a
	// node that skipped it would go on taking JOINs the app refuses.
	// Upgrade every node before using it.
	AppSetClientGroupsType MessageType = 17
)

// typeNames are the audit op names; they are stored in audit entries, so
// they do not change either.
var typeNames = map[MessageType]string{
	MemberUpsertType:       "member.upsert",
	MemberRemoveType:       "member.remove",
	MemberDrainType:        "member.drain",
	MemberWeightType:       "member.weight",
	AppCreateType:          "app.create",
	AppDeleteType:          "app.delete",
	AppRotateSecretType:    "app.rotate-secret",
	AppAddAPIKeyType:       "app.add-api-key",
	AppRevokeAPIKeyType:    "app.revoke-api-key",
	AppSetLimitsType:       "app.set-limits",
	DegradeSetType:         "degrade.set",
	DegradeOffType:         "degrade.off",
	TunablesSetType:        "tunables.set",
	AdminTokenCreateType:   "admin-token.create",
	AdminTokenRevokeType:   "admin-token.revoke",
	MemberVoterType:        "member.voter",
	AppSetClientGroupsType: "app.set-client-groups",
}

// String returns the op name, e.g. "app.create", or "type(N)" when unknown.
func (t MessageType) String() string {
	if n, ok := typeNames[t&^IgnoreUnknownTypeFlag]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Limits on envelope fields, so the request memory and the audit log stay
// bounded in bytes as well as in entries.
const (
	maxRequestIDLen = 128
	maxActorLen     = 256
	maxNameLen      = 64
	maxTextLen      = 256
	maxAddrLen      = 256
	maxListLen      = 256
)

// Command is one replicated write: a typed body in an envelope. Build one
// with the constructor for its type (SetDegrade, CreateApp, ...), then set
// RequestID and Actor; Store.Apply fills whichever of RequestID, Actor and
// Time is empty. Commands marshal to JSON as they are; the appliance
// forwards admin HTTP requests to the leader, not commands.
type Command struct {
	Type MessageType `json:"type"`
	// RequestID makes the command idempotent: the FSM applies an id once
	// and answers a repeat with the first result.
	RequestID string `json:"request_id,omitempty"`
	// Actor is who asked (an admin token id, "node/<id>"): audit only.
	Actor string `json:"actor,omitempty"`
	// Time is the proposer's clock; the FSM uses it for every timestamp it
	// sets so that all nodes compute the same state.
	Time time.Time       `json:"time"`
	Body json.RawMessage `json:"body"`
}

// Result is what an applied command returns.
type Result struct {
	// Index is the raft log index at which the command was first applied.
	Index uint64 `json:"index"`
	// Replayed is true when the request id had already been applied: the
	// result is the stored one and nothing changed this time.
	Replayed bool `json:"replayed,omitempty"`
}

// envelope is the JSON after the type byte in a log entry.
type envelope struct {
	RequestID string          `json:"request_id,omitempty"`
	Actor     string          `json:"actor,omitempty"`
	Time      time.Time       `json:"time"`
	Body      json.RawMessage `json:"body"`
}

// encode returns the log entry: one type byte, then the envelope as JSON.
// The type stays outside the JSON so the FSM can decide whether it knows
// the command before decoding anything.
func (c Command) encode() ([]byte, error) {
	env, err := json.Marshal(envelope{RequestID: c.RequestID, Actor: c.Actor, Time: c.Time, Body: c.Body})
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.Type, err)
	}
	return append([]byte{byte(c.Type)}, env...), nil
}

// decodeEntry is the inverse of encode.
func decodeEntry(data []byte) (Command, error) {
	if len(data) < 2 {
		return Command{}, fmt.Errorf("log entry of %d bytes", len(data))
	}
	var env envelope
	if err := json.Unmarshal(data[1:], &env); err != nil {
		return Command{}, fmt.Errorf("decode envelope of %s: %w", MessageType(data[0]), err)
	}
	return Command{Type: MessageType(data[0]), RequestID: env.RequestID, Actor: env.Actor, Time: env.Time, Body: env.Body}, nil
}

// check is the proposer-side validation run before a command enters the
// log: a known type, bounded envelope fields, and a body that decodes
// strictly (unknown fields are refused, so a newer node forwarding to an
// older leader gets ErrInvalid instead of having fields silently dropped)
// and passes the static checks. Everything that depends on the state is
// checked by the FSM.
func (c Command) check() error {
	newBody, ok := commands[c.Type&^IgnoreUnknownTypeFlag]
	if !ok {
		return failf(ErrInvalid, "command type %d", uint8(c.Type))
	}
	if len(c.RequestID) > maxRequestIDLen {
		return failf(ErrInvalid, "request id of %d bytes", len(c.RequestID))
	}
	if len(c.Actor) > maxActorLen {
		return failf(ErrInvalid, "actor of %d bytes", len(c.Actor))
	}
	if c.Time.Year() < 1 || c.Time.Year() > 9999 {
		return failf(ErrInvalid, "command time %v", c.Time)
	}
	b := newBody()
	if len(c.Body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(c.Body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(b); err != nil {
			return failf(ErrInvalid, "%s body: %v", c.Type, err)
		}
	}
	return b.validate()
}

// NewRequestID returns a random request id (128 bits, base32).
func NewRequestID() string { return rand.Text() }

// HashKey returns the SHA-256 under which API keys and admin tokens are
// stored.
func HashKey(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// NewSecret returns a fresh 256-bit signing secret with the given key id.
func NewSecret(keyID string) Secret {
	b := make([]byte, MinSecretLen)
	// crypto/rand.Read never returns an error (it aborts the process if
	// the kernel cannot supply randomness).
	_, _ = rand.Read(b)
	return Secret{KeyID: keyID, Secret: b}
}

// NewAPIKey returns a fresh random API key and its stored form. Show the
// key to the operator once; only the APIKey goes into a command.
func NewAPIKey(id string) (string, APIKey) {
	key := "pk_" + rand.Text() + rand.Text()
	return key, APIKey{ID: id, Hash: HashKey(key)}
}

// NewAdminToken returns a fresh random admin token and its stored form.
func NewAdminToken(id string, role Role) (string, AdminToken) {
	tok := "pa_" + rand.Text() + rand.Text()
	return tok, AdminToken{ID: id, Hash: HashKey(tok), Role: role}
}

// commandBody is the decoded body of one command type. validate holds the
// checks that need no state (run by the proposer and again by the FSM);
// apply holds the rest and the change itself, and summary the values the
// audit entry records (both in fsm.go).
type commandBody interface {
	validate() error
	apply(t *txn) error
	summary() string
}

func makeCommand(t MessageType, body commandBody) Command {
	// The bodies hold only strings, integers, booleans, byte slices and
	// byte arrays (the constructors clear every timestamp, which the FSM
	// sets itself), so Marshal cannot fail; if it ever did, the nil Body
	// is refused by check as an invalid command.
	raw, err := json.Marshal(body)
	if err != nil {
		raw = nil
	}
	return Command{Type: t, Body: raw}
}

// UpsertMember adds or replaces a member record. The FSM keeps Joined from
// the first upsert of the ID, and Draining from the record it replaces:
// only member.drain changes that, so a drain set while a node rejoins is
// not undone by the rejoin. Store.Join is the usual caller.
func UpsertMember(m Member) Command {
	m.Joined = time.Time{}
	return makeCommand(MemberUpsertType, &memberUpsertBody{Member: m})
}

// RemoveMember deletes a member record (Store.Remove also removes the node
// from raft).
func RemoveMember(id string) Command {
	return makeCommand(MemberRemoveType, &memberIDBody{ID: id})
}

// SetMemberDrain sets or clears a member's drain flag.
func SetMemberDrain(id string, draining bool) Command {
	return makeCommand(MemberDrainType, &memberDrainBody{ID: id, Draining: draining})
}

// SetMemberWeight sets a member's load-balancing weight (≥ 0).
func SetMemberWeight(id string, weight int) Command {
	return makeCommand(MemberWeightType, &memberWeightBody{ID: id, Weight: weight})
}

// SetMemberVoter records a member's raft suffrage, which only the
// leader's membership changes decide; an upsert of the whole record
// would overwrite a drain or weight set since it was read.
func SetMemberVoter(id string, voter bool) Command {
	return makeCommand(MemberVoterType, &memberVoterBody{ID: id, Voter: voter})
}

// CreateApp creates an app with exactly one secret and one or more API
// keys (hashes; see NewSecret and NewAPIKey) and its limits.
func CreateApp(app App) Command {
	app.Created = time.Time{}
	app.Secrets = clearSecretTimes(app.Secrets)
	app.APIKeys = clearKeyTimes(app.APIKeys)
	return makeCommand(AppCreateType, &appCreateBody{App: app})
}

// DeleteApp deletes an app.
func DeleteApp(id string) Command {
	return makeCommand(AppDeleteType, &appIDBody{AppID: id})
}

// RotateAppSecret makes s the app's newest secret and keeps at most
// MaxOldSecrets older ones.
func RotateAppSecret(appID string, s Secret) Command {
	s.Created = time.Time{}
	return makeCommand(AppRotateSecretType, &appSecretBody{AppID: appID, Secret: s})
}

// AddAPIKey adds an API key (hash) to an app.
func AddAPIKey(appID string, k APIKey) Command {
	k.Created = time.Time{}
	return makeCommand(AppAddAPIKeyType, &appKeyBody{AppID: appID, Key: k})
}

// RevokeAPIKey removes an API key from an app.
func RevokeAPIKey(appID, keyID string) Command {
	return makeCommand(AppRevokeAPIKeyType, &appKeyIDBody{AppID: appID, KeyID: keyID})
}

// SetAppLimits replaces an app's limits.
func SetAppLimits(appID string, l AppLimits) Command {
	return makeCommand(AppSetLimitsType, &appLimitsBody{AppID: appID, Limits: l})
}

// SetAppClientGroups says whether an app's devices may JOIN and LEAVE
// groups themselves; an app allows it until told otherwise.
func SetAppClientGroups(appID string, allow bool) Command {
	return makeCommand(AppSetClientGroupsType, &appClientGroupsBody{AppID: appID, Allow: allow})
}

// SetDegrade activates the degrade policy with d's Priority, Businesses
// and Reason. Active, By and Since are set by the FSM.
func SetDegrade(d Degrade) Command {
	return makeCommand(DegradeSetType, &degradeSetBody{Priority: d.Priority, Businesses: d.Businesses, Reason: d.Reason})
}

// DegradeOff deactivates the degrade policy, recording who and why.
func DegradeOff(reason string) Command {
	return makeCommand(DegradeOffType, &degradeOffBody{Reason: reason})
}

// SetTunables sets the non-zero fields of t as the region's tunables and
// keeps the others, so two operators changing different settings at once
// do not undo each other.
func SetTunables(t Tunables) Command {
	return makeCommand(TunablesSetType, &tunablesBody{Tunables: t})
}

// CreateAdminToken stores an admin token (hash; see NewAdminToken).
func CreateAdminToken(t AdminToken) Command {
	t.Created = time.Time{}
	return makeCommand(AdminTokenCreateType, &tokenCreateBody{Token: t})
}

// RevokeAdminToken deletes an admin token.
func RevokeAdminToken(id string) Command {
	return makeCommand(AdminTokenRevokeType, &tokenIDBody{ID: id})
}

func clearSecretTimes(in []Secret) []Secret {
	out := make([]Secret, len(in))
	for i, s := range in {
		s.Created = time.Time{}
		out[i] = s
	}
	return out
}

func clearKeyTimes(in []APIKey) []APIKey {
	out := make([]APIKey, len(in))
	for i, k := range in {
		k.Created = time.Time{}
		out[i] = k
	}
	return out
}

// The bodies. Their JSON is in the log: fields may be added only when an
// older node ignoring them computes the same state; otherwise add a type.

type memberUpsertBody struct {
	Member Member `json:"member"`
}

type memberIDBody struct {
	ID string `json:"id"`
}

type memberDrainBody struct {
	ID       string `json:"id"`
	Draining bool   `json:"draining"`
}

type memberVoterBody struct {
	ID    string `json:"id"`
	Voter bool   `json:"voter"`
}

type memberWeightBody struct {
	ID     string `json:"id"`
	Weight int    `json:"weight"`
}

type appCreateBody struct {
	App App `json:"app"`
}

type appIDBody struct {
	AppID string `json:"app_id"`
}

type appSecretBody struct {
	AppID  string `json:"app_id"`
	Secret Secret `json:"secret"`
}

type appKeyBody struct {
	AppID string `json:"app_id"`
	Key   APIKey `json:"key"`
}

type appKeyIDBody struct {
	AppID string `json:"app_id"`
	KeyID string `json:"key_id"`
}

type appLimitsBody struct {
	AppID  string    `json:"app_id"`
	Limits AppLimits `json:"limits"`
}

type appClientGroupsBody struct {
	AppID string `json:"app_id"`
	Allow bool   `json:"allow"`
}

type degradeSetBody struct {
	Priority   Priority `json:"priority"`
	Businesses []string `json:"businesses"`
	Reason     string   `json:"reason"`
}

type degradeOffBody struct {
	Reason string `json:"reason"`
}

type tunablesBody struct {
	Tunables Tunables `json:"tunables"`
}

type tokenCreateBody struct {
	Token AdminToken `json:"token"`
}

type tokenIDBody struct {
	ID string `json:"id"`
}

func (b *memberUpsertBody) validate() error {
	m := b.Member
	if err := checkName("member id", m.ID); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(m.RaftAddr); err != nil || len(m.RaftAddr) > maxAddrLen {
		return failf(ErrInvalid, "member %q raft address %q", m.ID, m.RaftAddr)
	}
	for _, a := range []string{m.AdminAddr, m.DeviceAddr, m.TCPAddr, m.PushAddr} {
		if len(a) > maxAddrLen {
			return failf(ErrInvalid, "member %q address of %d bytes", m.ID, len(a))
		}
	}
	if m.Weight < 0 {
		return failf(ErrInvalid, "member %q weight %d", m.ID, m.Weight)
	}
	return nil
}

func (b *memberIDBody) validate() error { return checkName("member id", b.ID) }

func (b *memberDrainBody) validate() error { return checkName("member id", b.ID) }

func (b *memberVoterBody) validate() error { return checkName("member id", b.ID) }

func (b *memberWeightBody) validate() error {
	if b.Weight < 0 {
		return failf(ErrInvalid, "member %q weight %d", b.ID, b.Weight)
	}
	return checkName("member id", b.ID)
}

func (b *appCreateBody) validate() error {
	a := b.App
	if err := checkName("app id", a.ID); err != nil {
		return err
	}
	if len(a.Secrets) != 1 {
		return failf(ErrInvalid, "app %q created with %d secrets, want 1", a.ID, len(a.Secrets))
	}
	if err := checkSecret(a.Secrets[0]); err != nil {
		return err
	}
	if len(a.APIKeys) < 1 || len(a.APIKeys) > MaxAPIKeys {
		return failf(ErrInvalid, "app %q created with %d API keys, want 1 to %d", a.ID, len(a.APIKeys), MaxAPIKeys)
	}
	seen := map[string]bool{}
	for _, k := range a.APIKeys {
		if err := checkAPIKey(k); err != nil {
			return err
		}
		if seen[k.ID] {
			return failf(ErrInvalid, "app %q API key id %q given twice", a.ID, k.ID)
		}
		seen[k.ID] = true
	}
	return checkLimits(a.AppLimits)
}

func (b *appIDBody) validate() error { return checkName("app id", b.AppID) }

func (b *appSecretBody) validate() error {
	if err := checkName("app id", b.AppID); err != nil {
		return err
	}
	return checkSecret(b.Secret)
}

func (b *appKeyBody) validate() error {
	if err := checkName("app id", b.AppID); err != nil {
		return err
	}
	return checkAPIKey(b.Key)
}

func (b *appKeyIDBody) validate() error {
	if err := checkName("app id", b.AppID); err != nil {
		return err
	}
	return checkName("API key id", b.KeyID)
}

func (b *appLimitsBody) validate() error {
	if err := checkName("app id", b.AppID); err != nil {
		return err
	}
	return checkLimits(b.Limits)
}

func (b *appClientGroupsBody) validate() error { return checkName("app id", b.AppID) }

func (b *degradeSetBody) validate() error {
	if !b.Priority.Valid() {
		return failf(ErrInvalid, "degrade priority %d", b.Priority)
	}
	if len(b.Reason) > maxTextLen {
		return failf(ErrInvalid, "degrade reason of %d bytes", len(b.Reason))
	}
	return checkNames("business", b.Businesses)
}

func (b *degradeOffBody) validate() error {
	if len(b.Reason) > maxTextLen {
		return failf(ErrInvalid, "degrade reason of %d bytes", len(b.Reason))
	}
	return nil
}

func (b *tunablesBody) validate() error {
	t := b.Tunables
	switch {
	case t.InboxMaxLen < 0 || t.InboxTTL < 0 || t.AckTimeout < 0 || t.AckBackoffMax < 0 ||
		t.InFlightWindow < 0 || t.QueueFrames < 0 || t.QueueBytes < 0:
		return failf(ErrInvalid, "negative tunable in %+v", t)
	case t == Tunables{}:
		return failf(ErrInvalid, "no tunable to set")
	case t.InboxMaxLen > MaxInboxMaxLen:
		return failf(ErrInvalid, "inbox max len %d over %d", t.InboxMaxLen, MaxInboxMaxLen)
	case t.InboxTTL > 0 && t.InboxTTL < time.Second:
		return failf(ErrInvalid, "inbox ttl %s under a second", t.InboxTTL)
	case t.InFlightWindow > MaxInFlightWindow:
		return failf(ErrInvalid, "in-flight window %d over %d", t.InFlightWindow, MaxInFlightWindow)
	case t.QueueFrames > MaxQueueFrames:
		return failf(ErrInvalid, "queue frames %d over %d", t.QueueFrames, MaxQueueFrames)
	case t.QueueBytes > MaxQueueBytes:
		return failf(ErrInvalid, "queue bytes %d over %d", t.QueueBytes, MaxQueueBytes)
	}
	return nil
}

func (b *tokenCreateBody) validate() error {
	if err := checkName("admin token id", b.Token.ID); err != nil {
		return err
	}
	if !b.Token.Role.Valid() {
		return failf(ErrInvalid, "admin token %q role %q", b.Token.ID, b.Token.Role)
	}
	if b.Token.Hash == ([32]byte{}) {
		return failf(ErrInvalid, "admin token %q without hash", b.Token.ID)
	}
	return nil
}

func (b *tokenIDBody) validate() error { return checkName("admin token id", b.ID) }

// checkName accepts identifiers of 1 to 64 bytes of [A-Za-z0-9._-]: safe
// in URLs, log lines and Redis keys without escaping.
func checkName(what, s string) error {
	if s == "" || len(s) > maxNameLen {
		return failf(ErrInvalid, "%s %q: want 1 to %d characters", what, s, maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return failf(ErrInvalid, "%s %q: only letters, digits, '.', '_' and '-'", what, s)
		}
	}
	return nil
}

func checkNames(what string, list []string) error {
	if len(list) > maxListLen {
		return failf(ErrInvalid, "%d %ss, at most %d", len(list), what, maxListLen)
	}
	for _, s := range list {
		if err := checkName(what, s); err != nil {
			return err
		}
	}
	return nil
}

func checkSecret(s Secret) error {
	if err := checkName("secret key id", s.KeyID); err != nil {
		return err
	}
	if len(s.Secret) < MinSecretLen || len(s.Secret) > 1024 {
		return failf(ErrInvalid, "secret %q of %d bytes, want %d to 1024", s.KeyID, len(s.Secret), MinSecretLen)
	}
	return nil
}

func checkAPIKey(k APIKey) error {
	if err := checkName("API key id", k.ID); err != nil {
		return err
	}
	if k.Hash == ([32]byte{}) {
		return failf(ErrInvalid, "API key %q without hash", k.ID)
	}
	return nil
}

func checkLimits(l AppLimits) error {
	if l.MaxPayload < 0 || l.MaxPayload > MaxPayloadCeiling {
		return failf(ErrInvalid, "max payload %d, want 0 to %d", l.MaxPayload, MaxPayloadCeiling)
	}
	if l.RatePerSec < 0 || l.Burst < 0 {
		return failf(ErrInvalid, "rate %d/s burst %d", l.RatePerSec, l.Burst)
	}
	return checkNames("business", l.Businesses)
}
