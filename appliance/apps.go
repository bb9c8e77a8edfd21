package appliance

import (
	"crypto/sha256"
	"crypto/subtle"
	"slices"
)

// appTable is an immutable snapshot of the apps a node serves, swapped
// whole through an atomic pointer when the region's metadata changes, so
// handshakes and pushes read it without locks.
type appTable struct {
	apps map[string]*appEntry
	// index is the region state's Index the table was built from (0 for
	// Config.Apps): tables only ever replace older ones.
	index uint64
}

type appEntry struct {
	id         string
	secrets    map[string][]byte // token key id → secret
	businesses []string          // nil: any
	// clientGroupsOff refuses the devices' own JOIN and LEAVE.
	clientGroupsOff bool
	apiKeys         [][sha256.Size]byte
	maxPayload      int
	limiter         *rateLimiter // nil: unlimited
}

func newAppTable(apps []AppConfig) *appTable {
	t := &appTable{apps: make(map[string]*appEntry, len(apps))}
	for _, a := range apps {
		e := &appEntry{
			id:              a.ID,
			secrets:         a.Secrets,
			businesses:      a.Businesses,
			maxPayload:      a.MaxPayload,
			clientGroupsOff: a.NoClientGroups,
		}
		if len(e.businesses) == 0 {
			e.businesses = nil // none listed: any, as in appTableFromState
		}
		if e.maxPayload == 0 {
			e.maxPayload = DefaultMaxPayload
		}
		for _, k := range a.APIKeys {
			e.apiKeys = append(e.apiKeys, sha256.Sum256([]byte(k)))
		}
		if a.RatePerSec > 0 {
			burst := a.Burst
			if burst == 0 {
				burst = max(1, int(a.RatePerSec))
			}
			e.limiter = newRateLimiter(a.RatePerSec, burst)
		}
		t.apps[a.ID] = e
	}
	return t
}

// TokenSecret implements token.Keys.
func (t *appTable) TokenSecret(app, keyID string) ([]byte, bool) {
	e, ok := t.apps[app]
	if !ok {
		return nil, false
	}
	return e.secrets[keyID], true
}

// businessAllowed reports whether every business in bs is enabled for
// app, and otherwise the first one that is not.
func (t *appTable) businessAllowed(app string, bs []string) (string, bool) {
	e, ok := t.apps[app]
	if !ok {
		return "", false
	}
	if e.businesses == nil {
		return "", true
	}
	for _, b := range bs {
		if !slices.Contains(e.businesses, b) {
			return b, false
		}
	}
	return "", true
}

// verifyAPIKey reports whether key is one of app's push API keys, in time
// independent of where a mismatch is.
func (e *appEntry) verifyAPIKey(key string) bool {
	h := sha256.Sum256([]byte(key))
	ok := 0
	for i := range e.apiKeys {
		ok |= subtle.ConstantTimeCompare(h[:], e.apiKeys[i][:])
	}
	return ok == 1
}
