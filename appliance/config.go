package appliance

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/lesismal/llib/std/crypto/tls"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
)

// Config configures a Node. Every field documents what its zero value
// means; New applies the defaults in one place (withDefaults) and refuses a
// configuration that cannot work (validate). Flags, environment and files
// are parsed only in cmd/pushd.
type Config struct {
	// NodeID names this node in routes, delivery streams and logs.
	// Zero: the host name.
	NodeID string
	// Region names the region the node belongs to, the same on every
	// node of it: the name other regions' pushes use for it ("regions"
	// in the push API), and the bridge's. 1–128 letters, digits and
	// ._:-, and not "all". Zero: "default".
	Region string

	// WSAddr is the device WebSocket listener (/v1/ws), which also serves
	// /healthz, /v1/dispatch and /metrics ("127.0.0.1:0" picks a free
	// port; Node.Addrs reports it). Zero: no WebSocket listener.
	WSAddr string
	// TCPAddr is the raw TCP device listener. Zero: no TCP listener.
	// With neither, the node opens no listener and serves only the
	// connections handed to ServeConn.
	TCPAddr string
	// TLS, when set, serves both device listeners over TLS.
	// Zero: plain TCP.
	TLS *tls.Config
	// AdvertiseWS and AdvertiseTCP are the addresses devices are told to
	// use for this node (dispatch, redirects). Zero: the bound addresses.
	AdvertiseWS, AdvertiseTCP string

	// DrainSpread is how long a draining or stopping node takes to send
	// its devices elsewhere: in batches every tenth of a second or so
	// (jittered), evenly, so the nodes they move to take about
	// sessions/DrainSpread new sessions a second. Shutdown spreads over
	// less when its context's deadline leaves less. Zero: 5 s.
	DrainSpread time.Duration

	// TraceMemory is how many bytes of trace events (what happened to
	// each message on this node: pushctl trace) the node keeps; the
	// oldest go first. Zero: 64 MiB. Negative: tracing off.
	TraceMemory int
	// TraceTTL is how long trace events are kept at most. Zero: 10 min.
	TraceTTL time.Duration

	// MaxTargets caps the devices of one push request. Zero: 1,000.
	MaxTargets int
	// MaxTTL is the longest a pushed message may wait in an inbox, and
	// the TTL of a push that names none, unless the region's tunables set
	// a shorter one. At most the store's inbox TTL (New refuses more).
	// Zero: the store's inbox TTL; 72 h without a store.
	MaxTTL time.Duration
	// InboxMaxLen caps the unacked messages each device's inbox keeps
	// (older ones are trimmed and the device told of the gap), unless the
	// region's tunables set a cap. Zero: the store's InboxMaxLen; 1,000
	// without a store.
	InboxMaxLen int64
	// RouteRefresh is how often the routes of local sessions get their
	// TTL renewed; keep it well under the store's route TTL (24 h by
	// default). Zero: 1 h.
	RouteRefresh time.Duration
	// NodeHeartbeat is how often the node publishes its heartbeat to the
	// store, refreshes its view of the live nodes and takes over the
	// dead ones; keep it well under the store's NodeTTL (pushd keeps the
	// default and wants a NodeTTL of at least 3 s). Zero: 1 s.
	NodeHeartbeat time.Duration

	// AllowedOrigins lists the browser origins (scheme://host[:port]) that
	// may open a WebSocket; a request with an Origin header not listed is
	// refused with 403. Requests without Origin (native clients) pass.
	// The same origins may read /v1/dispatch's answer from a page (CORS).
	// Zero: any origin.
	AllowedOrigins []string
	// RedisTopology ("single", "sentinel" or "cluster") and Durability
	// ("strict" or "fast") describe the region's Redis and what a push
	// answered stored promises, for operators: status shows them beside
	// what Redis reports (RedisTopology). The node acts on neither; the
	// Store waits for replicas as its own configuration says. Zero: shown
	// empty.
	RedisTopology string
	Durability    string

	// DeviceHandler serves the requests to the device listener's port
	// that the node does not serve itself (/v1/ws, /v1/dispatch, /healthz
	// and /metrics keep theirs): pushd --dev's page. It runs on the
	// listener's event loop, so it must answer at once and never block.
	// Zero: every other path answers 404.
	DeviceHandler http.Handler

	// HandshakeTimeout bounds the time from accept to a valid HELLO, and
	// the HTTP upgrade request's header read. Zero: 5 s.
	HandshakeTimeout time.Duration
	// HeartbeatInterval is how often devices are told to PING.
	// Zero: 30 s.
	HeartbeatInterval time.Duration
	// MissedHeartbeats is how many intervals without any frame from a
	// device close its connection. Zero: 2.
	MissedHeartbeats int
	// TimerTick is the resolution of the timing wheel that drives
	// handshake timeouts, idle reaping and retransmits. Zero: 100 ms.
	TimerTick time.Duration

	// MaxFrame is the largest frame body a device may send. Zero:
	// 16 KiB; at most wire.CeilingMaxFrame (64 KiB).
	MaxFrame int
	// QueueBytes and QueueFrames cap a connection's pending output; a
	// connection over either is closed as a slow consumer.
	// Zero: 256 KiB and 512 frames.
	QueueBytes  int
	QueueFrames int
	// WriteTimeout closes a connection whose written data stays unsent
	// this long. Zero: 10 s.
	WriteTimeout time.Duration
	// FlushInterval is the flush tick: frames bound for one connection
	// within it are merged into one write. A connection idle for longer
	// is written at once. Zero: 1 ms.
	FlushInterval time.Duration
	// CompressThreshold is the batch size from which batches to devices
	// that offered lz4 are compressed. Zero: 512 bytes. Negative: never.
	CompressThreshold int

	// Window is how many unacked messages a device may have in flight;
	// later ones wait in its inbox. Zero: 16.
	Window int
	// AckTimeout is how long a sent message may stay unacked before it is
	// resent; each resend doubles it up to AckBackoffMax. Zero: 10 s and
	// 60 s.
	AckTimeout    time.Duration
	AckBackoffMax time.Duration

	// Shards is the number of session registry shards. Zero: 64.
	Shards int
	// MaxConns caps open device connections (WebSocket and TCP together)
	// on this node; a connection past it is refused: 503 at_capacity to a
	// WebSocket upgrade, a close right after accept on TCP.
	// Zero: 1,000,000.
	MaxConns int
	// HTTPSlack is how many connections the WebSocket listener takes
	// beyond MaxConns, so that a full node still answers health checks,
	// /metrics, /v1/dispatch and, with 503, the upgrades it refuses. The
	// listener holds at most MaxConns + HTTPSlack connections and closes
	// any further one as it accepts it; a connection that has not
	// upgraded may stay idle HandshakeTimeout + 0.5 s after accept or
	// after an answer, then it is closed. Size the open-file limit for
	// MaxConns + HTTPSlack plus the rest of the process. Zero: 1,024.
	HTTPSlack int
	// ConnectRate and ConnectBurst limit new connections per source IP
	// (token bucket, per second). Zero: 20/s with a burst of 40.
	// Negative ConnectRate: no limit (load tests from one address).
	ConnectRate  float64
	ConnectBurst int
	// MaxGroups caps the groups one connection may join. Zero: 64.
	MaxGroups int

	// Upstreams maps a business to the webhook URL its devices' UP frames
	// are POSTed to. Zero: UP frames are answered unknown_business.
	Upstreams map[string]string
	// UpstreamTimeout bounds one webhook call. Zero: 5 s.
	UpstreamTimeout time.Duration

	// Apps are the apps whose devices may connect, with their token
	// secrets. Region metadata (raftmeta) supersedes this list once it is
	// wired; until then it is the source of truth. Zero: no app, so no
	// device can authenticate.
	Apps []AppConfig
}

// AppConfig is an app as the access layer needs it.
type AppConfig struct {
	ID string
	// Secrets maps token key ids to HMAC secrets of at least 32 bytes.
	// Several ids let a secret be rotated without refusing live tokens.
	Secrets map[string][]byte
	// Businesses lists the businesses a device of this app may name in
	// HELLO and a push may carry. Zero: any.
	Businesses []string
	// APIKeys are the keys business servers present to the push API
	// (Authorization: Bearer). Only their SHA-256 is kept in memory.
	// Zero: the app cannot push.
	APIKeys []string
	// NoClientGroups refuses the devices' own JOIN and LEAVE (join_refused):
	// the app's groups are managed by its business. Zero: devices may
	// join and leave groups.
	NoClientGroups bool
	// MaxPayload bounds a push payload. Zero: 4 KiB; at most 64 KiB.
	MaxPayload int
	// RatePerSec and Burst limit the device messages the app may push per
	// second (a push to 10 devices counts 10). Zero RatePerSec: no limit;
	// zero Burst: one second's worth.
	RatePerSec float64
	Burst      int
}

// DefaultRegion is the region of a node configured with none.
const DefaultRegion = "default"

// ValidRegion reports whether name can name a region: an id (1–128
// letters, digits and ._:-) other than "all", which the push API reads
// as every region.
func ValidRegion(name string) bool { return token.ValidID(name) && name != api.RegionsAll }

// Payload size limits for pushes.
const (
	DefaultMaxPayload = 4 << 10
	CeilingMaxPayload = 64 << 10
)

func (c Config) withDefaults() Config {
	if c.NodeID == "" {
		c.NodeID, _ = os.Hostname()
	}
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if c.DrainSpread == 0 {
		c.DrainSpread = 5 * time.Second
	}
	if c.TraceMemory == 0 {
		c.TraceMemory = 64 << 20
	}
	if c.TraceTTL == 0 {
		c.TraceTTL = 10 * time.Minute
	}
	if c.MaxTTL == 0 {
		c.MaxTTL = 72 * time.Hour
	}
	if c.InboxMaxLen == 0 {
		c.InboxMaxLen = 1000
	}
	if c.MaxTargets == 0 {
		c.MaxTargets = 1000
	}
	if c.RouteRefresh == 0 {
		c.RouteRefresh = time.Hour
	}
	if c.NodeHeartbeat == 0 {
		c.NodeHeartbeat = time.Second
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 30 * time.Second
	}
	if c.MissedHeartbeats == 0 {
		c.MissedHeartbeats = 2
	}
	if c.TimerTick == 0 {
		c.TimerTick = 100 * time.Millisecond
	}
	if c.MaxFrame == 0 {
		c.MaxFrame = wire.DefaultMaxFrame
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = 256 << 10
	}
	if c.QueueFrames == 0 {
		c.QueueFrames = 512
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = time.Millisecond
	}
	if c.CompressThreshold == 0 {
		c.CompressThreshold = wire.DefaultCompressThreshold
	}
	if c.Window == 0 {
		c.Window = 16
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = 10 * time.Second
	}
	if c.AckBackoffMax == 0 {
		c.AckBackoffMax = 60 * time.Second
	}
	if c.Shards == 0 {
		c.Shards = 64
	}
	if c.MaxConns == 0 {
		c.MaxConns = 1_000_000
	}
	if c.HTTPSlack == 0 {
		c.HTTPSlack = 1024
	}
	if c.ConnectRate == 0 {
		c.ConnectRate = 20
	}
	if c.ConnectBurst == 0 {
		c.ConnectBurst = 40
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = 5 * time.Second
	}
	if c.MaxGroups == 0 {
		c.MaxGroups = 64
	}
	return c
}

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid configuration")

func (c Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case !token.ValidID(c.NodeID):
		return bad("node id %q: use 1–128 letters, digits and ._:-", c.NodeID)
	case !ValidRegion(c.Region):
		return bad("region %q: use 1–128 letters, digits and ._:-, and not %q", c.Region, api.RegionsAll)
	case c.MaxFrame < 64 || c.MaxFrame > wire.CeilingMaxFrame:
		return bad("max frame %d: must be 64..%d bytes", c.MaxFrame, wire.CeilingMaxFrame)
	case c.HandshakeTimeout < 0, c.HeartbeatInterval < 0, c.WriteTimeout < 0, c.FlushInterval < 0, c.TimerTick < 0:
		return bad("durations must not be negative")
	case c.TimerTick > c.HeartbeatInterval/2:
		return bad("timer tick %s must be at most half the heartbeat interval %s", c.TimerTick, c.HeartbeatInterval)
	case c.MissedHeartbeats < 1:
		return bad("missed heartbeats %d: must be at least 1", c.MissedHeartbeats)
	case c.QueueBytes < c.MaxFrame || c.QueueFrames < 1:
		return bad("queue caps %d bytes / %d frames: must hold at least one frame", c.QueueBytes, c.QueueFrames)
	case c.MaxTargets < 1 || c.MaxTargets > 10000:
		return bad("max targets %d: must be 1..10000", c.MaxTargets)
	case c.MaxTTL < time.Second:
		return bad("max ttl %s: must be at least a second", c.MaxTTL)
	case c.InboxMaxLen < 0:
		return bad("inbox max len %d: must be positive", c.InboxMaxLen)
	case c.Window < 1 || c.Window > 1024:
		return bad("window %d: must be 1..1024", c.Window)
	case c.AckTimeout < 0 || c.AckBackoffMax < c.AckTimeout:
		return bad("ack timeout %s and backoff cap %s: the cap must be at least the timeout", c.AckTimeout, c.AckBackoffMax)
	case c.Shards < 1 || c.Shards > 4096:
		return bad("shards %d: must be 1..4096", c.Shards)
	case c.MaxConns < 1, c.MaxGroups < 0:
		return bad("connection and group caps must be positive")
	case c.HTTPSlack < 0:
		return bad("http slack %d: must not be negative", c.HTTPSlack)
	case c.DrainSpread < 0, c.TraceTTL < 0:
		return bad("durations must not be negative")
	}
	for b, u := range c.Upstreams {
		if !token.ValidID(b) {
			return bad("upstream business %q", b)
		}
		if parsed, err := url.Parse(u); err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
			return bad("upstream %q: %q is not an http(s) URL", b, u)
		}
	}
	seen := map[string]bool{}
	for _, a := range c.Apps {
		if !token.ValidID(a.ID) {
			return bad("app id %q", a.ID)
		}
		if seen[a.ID] {
			return bad("app %q listed twice", a.ID)
		}
		seen[a.ID] = true
		if len(a.Secrets) == 0 {
			return bad("app %q has no token secret", a.ID)
		}
		for kid, s := range a.Secrets {
			if !token.ValidID(kid) {
				return bad("app %q: key id %q", a.ID, kid)
			}
			if len(s) < token.MinSecretLen {
				return bad("app %q key %q: secret is %d bytes, need at least %d", a.ID, kid, len(s), token.MinSecretLen)
			}
		}
		if a.MaxPayload < 0 || a.MaxPayload > CeilingMaxPayload {
			return bad("app %q: max payload %d: must be 0..%d", a.ID, a.MaxPayload, CeilingMaxPayload)
		}
		if a.RatePerSec < 0 || a.Burst < 0 {
			return bad("app %q: rate limits must not be negative", a.ID)
		}
		for _, k := range a.APIKeys {
			if len(k) < 16 {
				return bad("app %q: API keys must be at least 16 characters", a.ID)
			}
		}
		for _, b := range a.Businesses {
			if !token.ValidID(b) {
				return bad("app %q: business %q", a.ID, b)
			}
		}
	}
	return nil
}

// idleTimeout is how long a connection may stay silent before it is reaped.
// A quarter interval of grace absorbs network jitter on the last PING.
func (c Config) idleTimeout() time.Duration {
	return time.Duration(c.MissedHeartbeats)*c.HeartbeatInterval + c.HeartbeatInterval/4
}
