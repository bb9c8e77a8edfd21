package appliance

import (
	"errors"
	"testing"

	"github.com/pushd/pushd/appliance/api"
)

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"1.10", "1.9", 1},
		{"1.4", "1.4.0", 0},
		{"2", "1.99.99", 1},
		{"1.2.3", "1.2.3", 0},
		{"1.2-beta", "1.2-alpha", 1}, // not numbers: as strings
		{"1.2", "1.2-beta", -1},
		{"", "0", 0},
	}
	for _, c := range cases {
		if got := compareVersions(c.a, c.b); got != c.want {
			t.Errorf("compare(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := compareVersions(c.b, c.a); got != -c.want {
			t.Errorf("compare(%q, %q) = %d, want %d", c.b, c.a, got, -c.want)
		}
	}
}

func TestParseFilter_RefusesBadFilters(t *testing.T) {
	long := make([]string, 17)
	for i := range long {
		long[i] = "x"
	}
	cases := map[string]*api.Filter{
		"17 platforms":          {Platforms: long},
		"an empty platform":     {Platforms: []string{""}},
		"a business not an id":  {Businesses: []string{"a b"}},
		"a tag not an id":       {Tags: []string{"v/ip"}},
		"prefix and range":      {Versions: []api.VersionMatch{{Prefix: api.Ptr("1"), Min: api.Ptr("1")}}},
		"a match of nothing":    {Versions: []api.VersionMatch{{}}},
		"an empty prefix":       {Versions: []api.VersionMatch{{Prefix: api.Ptr("")}}},
		"min above max":         {Versions: []api.VersionMatch{{Min: api.Ptr("2.0"), Max: api.Ptr("1.9")}}},
		"a version of 33 bytes": {Versions: []api.VersionMatch{{Max: api.Ptr("123456789012345678901234567890123")}}},
	}
	for name, f := range cases {
		if _, err := ParseFilter(f); !errors.Is(err, ErrFilter) {
			t.Errorf("%s: %v, want ErrFilter", name, err)
		}
	}
	if f, err := ParseFilter(&api.Filter{}); f != nil || err != nil {
		t.Fatalf("an empty filter: %v, %v; want none", f, err)
	}
}

// admits checks the business rule first, then every criterion the filter
// gives; a list in the filter narrows, a session's empty businesses take
// every business.
func TestAudience_Admits(t *testing.T) {
	f, err := ParseFilter(&api.Filter{Platforms: []string{"ios"}, Versions: []api.VersionMatch{{Prefix: api.Ptr("2.")}, {Min: api.Ptr("1.9"), Max: api.Ptr("1.10")}},
		Businesses: []string{"news"}, Tags: []string{"vip"}})
	if err != nil {
		t.Fatal(err)
	}
	// session holds atomics, so each case builds its own rather than copy one.
	base := func() *session { return &session{platform: "ios", version: "2.1", tags: []string{"vip"}} }
	cases := []struct {
		name     string
		mut      func(*session)
		business string
		want     bool
	}{
		{"matches everything", func(*session) {}, "", true},
		{"another platform", func(s *session) { s.platform = "android" }, "", false},
		{"a version in the range", func(s *session) { s.version = "1.10" }, "", true},
		{"a version out of both", func(s *session) { s.version = "1.11" }, "", false},
		{"no tag", func(s *session) { s.tags = nil }, "", false},
		{"declared news", func(s *session) { s.businesses = []string{"chat", "news"} }, "news", true},
		{"declared only chat", func(s *session) { s.businesses = []string{"chat"} }, "news", false},
		{"declared only chat, a chat message the filter's businesses exclude", func(s *session) { s.businesses = []string{"chat"} }, "chat", false},
		{"declared nothing: takes every business", func(*session) {}, "news", true},
	}
	for _, c := range cases {
		s := base()
		c.mut(s)
		if got := (audience{business: c.business, filter: f}).admits(s); got != c.want {
			t.Errorf("%s: admits = %v, want %v", c.name, got, c.want)
		}
	}
	chatOnly := session{businesses: []string{"chat"}}
	if (audience{business: "news"}).admits(&chatOnly) || !(audience{}).admits(&chatOnly) || !(audience{business: "chat"}).admits(&chatOnly) {
		t.Fatal("the business rule without a filter")
	}
	if !(audience{}).everyone() || (audience{business: "x"}).everyone() || (audience{filter: f}).everyone() {
		t.Fatal("everyone")
	}
	back, err := decodeFilter(f.encoded())
	if err != nil || string(back.encoded()) != string(f.encoded()) {
		t.Fatalf("a filter's JSON does not round-trip: %s vs %s (%v)", back.encoded(), f.encoded(), err)
	}
}
