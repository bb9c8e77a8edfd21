package raftmeta

import (
	"github.com/pushd/pushd/appliance/api"

	"crypto/sha256"
	"crypto/subtle"
	"maps"
	"slices"
	"strings"
	"time"
)

// Priority orders pushes for the degrade policy.
type Priority uint8

// The push priorities, lowest first.
const (
	PriorityLow    Priority = 1
	PriorityNormal Priority = 2
	PriorityHigh   Priority = 3
)

// Valid reports whether p is one of the defined priorities.
func (p Priority) Valid() bool { return p >= PriorityLow && p <= PriorityHigh }

// String returns "low", "normal" or "high".
func (p Priority) String() string {
	switch p {
	case PriorityLow:
		return "low"
	case PriorityNormal:
		return "normal"
	case PriorityHigh:
		return "high"
	}
	return "invalid"
}

// Role is an admin API role. Roles are ordered: viewer < operator < admin.
type Role string

// The admin roles.
const (
	RoleViewer   Role = "viewer"
	RoleOperator Role = "operator"
	RoleAdmin    Role = "admin"
)

var roleRank = map[Role]int{RoleViewer: 1, RoleOperator: 2, RoleAdmin: 3}

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool { return roleRank[r] > 0 }

// Allows reports whether a token with role r may do what needs role need.
// An invalid role allows nothing.
func (r Role) Allows(need Role) bool {
	return r.Valid() && need.Valid() && roleRank[r] >= roleRank[need]
}

// Region-wide limits the FSM enforces on commands.
const (
	// DefaultMaxPayload is the push payload limit of an app whose
	// MaxPayload is 0.
	DefaultMaxPayload = 4 << 10
	// MaxPayloadCeiling is the largest MaxPayload an app may have.
	MaxPayloadCeiling = 64 << 10
	// MinSecretLen is the shortest token-signing secret accepted (256 bits).
	MinSecretLen = 32
	// MaxOldSecrets is how many older secrets a rotation keeps, so tokens
	// signed just before a rotation keep verifying.
	MaxOldSecrets = 2
	// MaxAPIKeys bounds the API keys of one app.
	MaxAPIKeys = 16
	// AuditLen is how many audit entries the state keeps; older ones drop.
	AuditLen = 1000
	// RequestMemoryLen is how many request ids the FSM remembers for
	// dedupe; the oldest is forgotten first.
	RequestMemoryLen = 10000
)

// Member is one pushd node of the region.
type Member struct {
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	AdminAddr  string `json:"admin_addr"`
	DeviceAddr string `json:"device_addr"`
	TCPAddr    string `json:"tcp_addr"`
	PushAddr   string `json:"push_addr"`
	Weight     int    `json:"weight"`
	Draining   bool   `json:"draining"`
	// Voter mirrors the node's raft suffrage as set by Join.
	Voter bool `json:"voter"`
	// Joined is the time of the first upsert of this ID (set by the FSM).
	Joined time.Time `json:"joined"`
}

// Secret is a device-token signing secret. Nodes verify a token with the
// secret its key id names, so older secrets keep working after a rotation.
type Secret struct {
	KeyID   string    `json:"key_id"`
	Secret  []byte    `json:"secret"`
	Created time.Time `json:"created"`
}

// APIKey is a push API key of an app, stored as the SHA-256 of the key.
// The key itself is never stored.
type APIKey struct {
	ID      string    `json:"id"`
	Hash    [32]byte  `json:"hash"`
	Created time.Time `json:"created"`
}

// App is a tenant of the push service.
type App struct {
	ID string `json:"id"`
	// Secrets are newest first; at most 1+MaxOldSecrets.
	Secrets []Secret `json:"secrets"`
	APIKeys []APIKey `json:"api_keys"`
	// AppLimits: MaxPayload is the push payload limit in bytes (0 →
	// DefaultMaxPayload); RatePerSec and Burst limit pushes per second (0
	// → unlimited); Businesses are those the app may push for (empty →
	// any). Embedded, so their JSON keys stay at the top of the app.
	AppLimits
	// ClientGroupsOff refuses devices' own JOIN and LEAVE: the app's
	// groups are managed by its business only. False (the zero value, so
	// apps created before the setting existed keep allowing them) allows
	// them.
	ClientGroupsOff bool      `json:"client_groups_off,omitempty"`
	Created         time.Time `json:"created"`
}

// AppLimits are the adjustable limits of an app, in the shape the admin
// API carries them: one type, so the log, the state and the API cannot
// drift apart.
type AppLimits = api.AppLimits

// Degrade is the region's degrade policy: while Active, pushes at or
// below Priority of the listed businesses (of every business when the list
// is empty) are shed.
type Degrade struct {
	Active     bool     `json:"active"`
	Priority   Priority `json:"priority"`
	Businesses []string `json:"businesses"`
	Reason     string   `json:"reason"`
	// By and Since are set by the FSM from the command's actor and time.
	By    string    `json:"by"`
	Since time.Time `json:"since"`
}

// Tunables override node settings region-wide; a zero field means the
// node's own configuration.
type Tunables struct {
	// InboxMaxLen caps the unacked messages a device's inbox keeps; older
	// ones are trimmed (and the device told of the gap).
	InboxMaxLen int64 `json:"inbox_max_len"`
	// InboxTTL is the longest a message may wait for its device, and the
	// TTL of a push that names none. A node never goes beyond its own
	// inbox TTL.
	InboxTTL time.Duration `json:"inbox_ttl"`
	// AckTimeout and AckBackoffMax time retransmits.
	AckTimeout    time.Duration `json:"ack_timeout"`
	AckBackoffMax time.Duration `json:"ack_backoff_max"`
	// InFlightWindow is how many unacked messages a session may have.
	InFlightWindow int `json:"in_flight_window"`
	// QueueFrames and QueueBytes cap a connection's pending output.
	QueueFrames int `json:"queue_frames"`
	QueueBytes  int `json:"queue_bytes"`
}

// Bounds of the tunables, checked when they are set.
const (
	MaxInboxMaxLen    = 1_000_000
	MaxInFlightWindow = 1024
	MaxQueueFrames    = 1 << 20
	MaxQueueBytes     = 64 << 20
)

// AdminToken is an admin API bearer token, stored as the SHA-256 of the
// token.
type AdminToken struct {
	ID      string    `json:"id"`
	Hash    [32]byte  `json:"hash"`
	Role    Role      `json:"role"`
	Created time.Time `json:"created"`
}

// AuditEntry records one successful write.
type AuditEntry struct {
	Index  uint64    `json:"index"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`
	Op     string    `json:"op"`
	Target string    `json:"target"`
	// Summary is what the command set, as "key=value" words (for example
	// `priority=low businesses=[] reason="surge"`), at most 256 bytes.
	// It never holds a secret, an API key or a token hash.
	Summary   string `json:"summary,omitempty"`
	RequestID string `json:"request_id"`
}

// State is the replicated region metadata at one log index. A *State
// returned by Store.State is immutable and shared by every reader: never
// modify it or anything reachable from it (Clone first). Maps are never nil.
type State struct {
	// Index is the log index of the last command that changed the state.
	Index       uint64                `json:"index"`
	Members     map[string]Member     `json:"members"`
	Apps        map[string]App        `json:"apps"`
	Degrade     Degrade               `json:"degrade"`
	Tunables    Tunables              `json:"tunables"`
	AdminTokens map[string]AdminToken `json:"admin_tokens"`
	// Audit holds the last AuditLen writes, oldest first.
	Audit []AuditEntry `json:"audit"`
}

// newState returns the empty state of a new cluster.
func newState() *State {
	return &State{
		Members:     map[string]Member{},
		Apps:        map[string]App{},
		AdminTokens: map[string]AdminToken{},
	}
}

// normalize makes a decoded state satisfy the non-nil-maps invariant.
func (s *State) normalize() {
	if s.Members == nil {
		s.Members = map[string]Member{}
	}
	if s.Apps == nil {
		s.Apps = map[string]App{}
	}
	if s.AdminTokens == nil {
		s.AdminTokens = map[string]AdminToken{}
	}
}

// App returns the app with the given id.
func (s *State) App(id string) (App, bool) {
	a, ok := s.Apps[id]
	return a, ok
}

// VerifyAPIKey reports whether key is a current API key of the app. The
// comparison is constant-time over the hashes of all the app's keys, so the
// answer's timing says nothing about which key almost matched.
func (s *State) VerifyAPIKey(appID, key string) bool {
	a, ok := s.Apps[appID]
	if !ok {
		return false
	}
	h := sha256.Sum256([]byte(key))
	match := 0
	for _, k := range a.APIKeys {
		match |= subtle.ConstantTimeCompare(h[:], k.Hash[:])
	}
	return match == 1
}

// AdminRole returns the role and id of the admin token, if it is current.
// Every stored hash is compared in constant time.
func (s *State) AdminRole(token string) (Role, string, bool) {
	h := sha256.Sum256([]byte(token))
	var found AdminToken
	match := 0
	for _, t := range s.AdminTokens {
		if subtle.ConstantTimeCompare(h[:], t.Hash[:]) == 1 {
			found = t
			match = 1
		}
	}
	if match == 0 {
		return "", "", false
	}
	return found.Role, found.ID, true
}

// Voters returns the members recorded as raft voters, sorted by ID.
func (s *State) Voters() []Member {
	var out []Member
	for _, m := range s.Members {
		if m.Voter {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Clone returns a deep copy that the caller may modify.
func (s *State) Clone() *State {
	c := *s
	c.Members = maps.Clone(s.Members)
	c.Apps = make(map[string]App, len(s.Apps))
	for id, a := range s.Apps {
		c.Apps[id] = a.clone()
	}
	c.Degrade.Businesses = slices.Clone(s.Degrade.Businesses)
	c.AdminTokens = maps.Clone(s.AdminTokens)
	c.Audit = slices.Clone(s.Audit)
	return &c
}

func (a App) clone() App {
	a.Secrets = slices.Clone(a.Secrets)
	for i := range a.Secrets {
		a.Secrets[i].Secret = slices.Clone(a.Secrets[i].Secret)
	}
	a.APIKeys = slices.Clone(a.APIKeys)
	a.Businesses = slices.Clone(a.Businesses)
	return a
}

// txn builds the next State from the current one without touching it:
// the struct is copied shallowly and each map is copied the first time a
// command writes to it, so untouched maps stay shared between versions.
// Values stored in the maps are replaced, never modified in place; slices
// inside them are rebuilt, never appended to.
type txn struct {
	next         *State
	membersOwned bool
	appsOwned    bool
	tokensOwned  bool
	// now and actor come from the command's envelope.
	now    time.Time
	actor  string
	target string // for the audit entry
}

func newTxn(base *State, now time.Time, actor string) *txn {
	next := *base
	return &txn{next: &next, now: now, actor: actor}
}

func (t *txn) members() map[string]Member {
	if !t.membersOwned {
		t.next.Members = maps.Clone(t.next.Members)
		t.membersOwned = true
	}
	return t.next.Members
}

func (t *txn) apps() map[string]App {
	if !t.appsOwned {
		t.next.Apps = maps.Clone(t.next.Apps)
		t.appsOwned = true
	}
	return t.next.Apps
}

func (t *txn) tokens() map[string]AdminToken {
	if !t.tokensOwned {
		t.next.AdminTokens = maps.Clone(t.next.AdminTokens)
		t.tokensOwned = true
	}
	return t.next.AdminTokens
}
