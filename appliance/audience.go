package appliance

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/token"
)

// Bounds of a push filter, so one filter costs little per session it is
// checked against.
const (
	maxFilterList    = 16
	maxFilterVersion = 32 // a HELLO version is at most 32 bytes
)

// ErrFilter is wrapped by every error ParseFilter returns.
var ErrFilter = errors.New("invalid filter")

// Filter is a parsed push filter (api.Filter): who among a group's
// members, or an app's sessions, a message is for. The zero Filter, and
// a nil one, admit every session. Build one with ParseFilter. A Filter
// is immutable and safe for concurrent use.
type Filter struct {
	platforms  []string
	versions   []versionMatch
	businesses []string
	tags       []string
	// raw is the filter's JSON, for group streams and delivery entries:
	// another node or a later catch-up parses it again.
	raw []byte
}

type versionMatch struct {
	prefix   string
	min, max string // "" for an open end
	ranged   bool
}

// ParseFilter checks f and returns it parsed; nil for no filter (nil or
// every list empty). Lists hold at most 16 entries; platforms are 1–32
// bytes, businesses and tags ids; a version match gives a prefix, or a
// min and/or a max, of 1–32 bytes.
func ParseFilter(f *api.Filter) (*Filter, error) {
	if f == nil || (len(f.Platforms) == 0 && len(f.Versions) == 0 && len(f.Businesses) == 0 && len(f.Tags) == 0) {
		return nil, nil
	}
	for name, list := range map[string]int{"platforms": len(f.Platforms), "versions": len(f.Versions),
		"businesses": len(f.Businesses), "tags": len(f.Tags)} {
		if list > maxFilterList {
			return nil, fmt.Errorf("%w: %d %s, at most %d", ErrFilter, list, name, maxFilterList)
		}
	}
	out := &Filter{platforms: f.Platforms, businesses: f.Businesses, tags: f.Tags}
	for _, p := range f.Platforms {
		if p == "" || len(p) > 32 {
			return nil, fmt.Errorf("%w: platform %q: 1-32 bytes", ErrFilter, p)
		}
	}
	for _, b := range f.Businesses {
		if !token.ValidID(b) {
			return nil, fmt.Errorf("%w: business %q is not an id", ErrFilter, b)
		}
	}
	for _, t := range f.Tags {
		if !token.ValidID(t) {
			return nil, fmt.Errorf("%w: tag %q is not an id", ErrFilter, t)
		}
	}
	for i, v := range f.Versions {
		m, err := parseVersionMatch(v)
		if err != nil {
			return nil, fmt.Errorf("%w: versions[%d]: %v", ErrFilter, i, err)
		}
		out.versions = append(out.versions, m)
	}
	raw, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFilter, err)
	}
	out.raw = raw
	return out, nil
}

func parseVersionMatch(v api.VersionMatch) (versionMatch, error) {
	bound := func(name string, s *string) (string, error) {
		if s == nil {
			return "", nil
		}
		if *s == "" || len(*s) > maxFilterVersion {
			return "", fmt.Errorf("%s %q: 1-%d bytes", name, *s, maxFilterVersion)
		}
		return *s, nil
	}
	switch {
	case v.Prefix != nil && (v.Min != nil || v.Max != nil):
		return versionMatch{}, errors.New("give a prefix, or a min and/or a max, not both")
	case v.Prefix != nil:
		p, err := bound("prefix", v.Prefix)
		return versionMatch{prefix: p}, err
	case v.Min == nil && v.Max == nil:
		return versionMatch{}, errors.New("give a prefix, or a min and/or a max")
	}
	lo, err := bound("min", v.Min)
	if err != nil {
		return versionMatch{}, err
	}
	hi, err := bound("max", v.Max)
	if err != nil {
		return versionMatch{}, err
	}
	if lo != "" && hi != "" && compareVersions(lo, hi) > 0 {
		return versionMatch{}, fmt.Errorf("min %q is above max %q", lo, hi)
	}
	return versionMatch{min: lo, max: hi, ranged: true}, nil
}

// decodeFilter parses a filter's JSON as another node or a group stream
// stored it; nil for none.
func decodeFilter(raw []byte) (*Filter, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var f api.Filter
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFilter, err)
	}
	return ParseFilter(&f)
}

// encoded is the filter's JSON; nil for none.
func (f *Filter) encoded() []byte {
	if f == nil {
		return nil
	}
	return f.raw
}

func (m versionMatch) matches(v string) bool {
	if !m.ranged {
		return strings.HasPrefix(v, m.prefix)
	}
	return (m.min == "" || compareVersions(v, m.min) >= 0) && (m.max == "" || compareVersions(v, m.max) <= 0)
}

// compareVersions orders dotted versions part by part: two parts that are
// both decimal numbers compare as numbers ("1.10" > "1.9"), others as
// strings, and a missing part counts as "0" ("1.4" = "1.4.0").
func compareVersions(a, b string) int {
	for a != "" || b != "" {
		var pa, pb string
		pa, a, _ = strings.Cut(a, ".")
		pb, b, _ = strings.Cut(b, ".")
		if pa == "" {
			pa = "0"
		}
		if pb == "" {
			pb = "0"
		}
		na, errA := strconv.ParseUint(pa, 10, 64)
		nb, errB := strconv.ParseUint(pb, 10, 64)
		var c int
		if errA == nil && errB == nil {
			c = cmpUint(na, nb)
		} else {
			c = strings.Compare(pa, pb)
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// audience says which sessions a group or broadcast message is for: those
// that take its business (see takes) and that its filter admits.
type audience struct {
	business string
	filter   *Filter
}

// everyone reports whether the audience admits every session, so a
// fan-out can skip the checks.
func (a audience) everyone() bool { return a.business == "" && a.filter == nil }

// admits reports whether s is in the audience. The session attributes it
// reads are set before the session is registered and never change, so it
// needs no session lock.
func (a audience) admits(s *session) bool {
	if !s.takes(a.business) {
		return false
	}
	f := a.filter
	if f == nil {
		return true
	}
	if len(f.platforms) > 0 && !slices.Contains(f.platforms, s.platform) {
		return false
	}
	if len(f.versions) > 0 && !slices.ContainsFunc(f.versions, func(m versionMatch) bool { return m.matches(s.version) }) {
		return false
	}
	if len(f.businesses) > 0 && len(s.businesses) > 0 && !slices.ContainsFunc(f.businesses, func(b string) bool { return slices.Contains(s.businesses, b) }) {
		return false
	}
	if len(f.tags) > 0 && !slices.ContainsFunc(f.tags, func(t string) bool { return slices.Contains(s.tags, t) }) {
		return false
	}
	return true
}

// takes reports whether a message of business b is for this session: one
// without a business is for every session, and a session that declared no
// business in its HELLO takes every business. Like admits, it reads only
// attributes fixed before the session was registered.
func (s *session) takes(b string) bool {
	return b == "" || len(s.businesses) == 0 || slices.Contains(s.businesses, b)
}
