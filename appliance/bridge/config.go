package bridge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/sasl"

	"github.com/pushd/pushd/appliance"
)

// Config configures a Bridge. Every field documents what its zero value
// means; New applies the defaults in one place and refuses a
// configuration that cannot work. Flags and files are cmd/pushd's.
type Config struct {
	// Peers are the other regions this region exchanges pushes with:
	// the names the push API accepts in "regions" besides this region's
	// own, and what "all" means. Required: a bridge with no peer has
	// nothing to do. The region's own name is the core's (Region).
	Peers []string
	// Brokers are the Kafka cluster's seed brokers, host:port. Required.
	Brokers []string
	// Topic names the topic each region produces to: "{region}" in it is
	// replaced by the producing region's name, and a region consumes the
	// topics of its peers. A name without "{region}" is one topic every
	// region produces to and consumes (each skips its own records by
	// their headers). Zero: "pushd-bridge.{region}".
	Topic string
	// Group is this region's consumer group: every node of the region
	// joins it, so each record is imported by one of them.
	// Zero: "pushd-bridge.<region>".
	Group string
	// BufferRecords and BufferBytes bound the records (and their bytes:
	// keys, values and headers) a node holds for Kafka: produced and not
	// yet acknowledged. A push whose records do not fit is not queued
	// and its answer says "failed" for every other region; nothing waits.
	// Zero: 10,000 records and 16 MiB.
	BufferRecords int
	BufferBytes   int64
	// Linger is how long the producer waits for more records before it
	// sends a partition's batch. Zero: 2 ms.
	Linger time.Duration
	// SessionTimeout is how long the group waits for a silent member
	// before it gives its partitions to the others. Nodes join with
	// their node id as a static member id, so a node that restarts
	// within it takes its partitions back at once. Zero: 10 s.
	SessionTimeout time.Duration
	// CloseTimeout bounds how long Close waits for Kafka to take the
	// buffered records; those still buffered then are dropped, logged
	// and counted as produce errors. Zero: 5 s.
	CloseTimeout time.Duration
	// TLS, when set, connects to the brokers over TLS with this config.
	// Zero: plaintext.
	TLS *tls.Config
	// SASL, when set, authenticates to the brokers (PLAIN, SCRAM).
	// Zero: no authentication.
	SASL sasl.Mechanism
}

// Defaults and bounds.
const (
	DefaultTopic         = "pushd-bridge.{region}"
	DefaultBufferRecords = 10_000
	DefaultBufferBytes   = 16 << 20
	regionPlaceholder    = "{region}"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid bridge configuration")

func (c Config) withDefaults(region string) Config {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.Group == "" {
		c.Group = "pushd-bridge." + region
	}
	if c.BufferRecords == 0 {
		c.BufferRecords = DefaultBufferRecords
	}
	if c.BufferBytes == 0 {
		c.BufferBytes = DefaultBufferBytes
	}
	if c.Linger == 0 {
		c.Linger = 2 * time.Millisecond
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 5 * time.Second
	}
	return c
}

// Validate checks c, its defaults applied, for the region named region,
// as New does, without connecting anywhere.
func (c Config) Validate(region string) error { return c.withDefaults(region).validate(region) }

func (c Config) validate(region string) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case len(c.Brokers) == 0:
		return bad("no brokers")
	case len(c.Peers) == 0:
		return bad("no peer regions: name the other regions this one exchanges pushes with")
	case c.BufferRecords < 1 || c.BufferBytes < 1:
		return bad("buffer of %d records / %d bytes: both must be positive", c.BufferRecords, c.BufferBytes)
	case c.Linger < 0 || c.SessionTimeout < time.Second || c.CloseTimeout < 0:
		return bad("linger %s, session timeout %s, close timeout %s: none negative, the session at least 1s",
			c.Linger, c.SessionTimeout, c.CloseTimeout)
	case c.Group == "" || strings.ContainsAny(c.Group, " \t\n"):
		return bad("consumer group %q", c.Group)
	}
	for _, b := range c.Brokers {
		if !strings.Contains(b, ":") {
			return bad("broker %q: want host:port", b)
		}
	}
	for i, p := range c.Peers {
		switch {
		case !appliance.ValidRegion(p):
			return bad("peer region %q: use 1–128 letters, digits and ._:-, and not \"all\"", p)
		case p == region:
			return bad("peer region %q is this region", p)
		case slices.Contains(c.Peers[:i], p):
			return bad("peer region %q listed twice", p)
		}
	}
	for _, r := range append([]string{region}, c.Peers...) {
		if err := checkTopic(c.topicFor(r)); err != nil {
			return bad("topic %q for region %s: %v", c.topicFor(r), r, err)
		}
	}
	return nil
}

// topicFor is the topic region produces to.
func (c Config) topicFor(region string) string {
	return strings.ReplaceAll(c.Topic, regionPlaceholder, region)
}

// shared reports whether every region produces to one topic.
func (c Config) shared() bool { return !strings.Contains(c.Topic, regionPlaceholder) }

// checkTopic applies Kafka's rules for topic names.
func checkTopic(t string) error {
	if t == "" || t == "." || t == ".." || len(t) > 249 {
		return errors.New(`a topic name is 1–249 characters, and neither "." nor ".."`)
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%q is not allowed in a topic name (letters, digits, . _ -)", r)
		}
	}
	return nil
}
