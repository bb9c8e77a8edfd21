package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lesismal/llib/std/crypto/tls"
	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/streams"
)

// options is everything pushd can be told, from flags, environment and
// the --config file. JSON field names are the flag names.
type options struct {
	Config    string `json:"-"`
	Dev       bool   `json:"dev"`
	NodeID    string `json:"node-id"`
	DataDir   string `json:"data-dir"`
	LogLevel  string `json:"log-level"`
	LogFormat string `json:"log-format"`

	WSAddr         string `json:"ws-addr"`
	TCPAddr        string `json:"tcp-addr"`
	PushAddr       string `json:"push-addr"`
	AdminAddr      string `json:"admin-addr"`
	RaftAddr       string `json:"raft-addr"`
	AdvertiseWS    string `json:"advertise-ws"`
	AdvertiseTCP   string `json:"advertise-tcp"`
	AdvertisePush  string `json:"advertise-push"`
	AdvertiseAdmin string `json:"advertise-admin"`
	RaftAdvertise  string `json:"raft-advertise"`
	Weight         int    `json:"weight"`

	Bootstrap      bool     `json:"bootstrap"`
	Join           string   `json:"join"`
	JoinToken      string   `json:"join-token"`
	JoinTokenFile  string   `json:"join-token-file"`
	TLSCert        string   `json:"tls-cert"`
	TLSKey         string   `json:"tls-key"`
	AllowedOrigins []string `json:"allowed-origin"`

	// The region's own TLS (Raft and the admin API): see tls.go.
	RegionCA          string   `json:"region-ca"`
	RegionCAKey       string   `json:"region-ca-key"`
	TLSNames          []string `json:"tls-name"`
	InsecurePlaintext bool     `json:"insecure-plaintext"`
	DevTLS            bool     `json:"dev-tls"`
	PushTLSCert       string   `json:"push-tls-cert"`
	PushTLSKey        string   `json:"push-tls-key"`

	Redis             string        `json:"redis"`
	RedisUser         string        `json:"redis-user"`
	RedisPasswordFile string        `json:"redis-password-file"`
	RedisCA           string        `json:"redis-ca"`
	InboxMaxLen       int64         `json:"inbox-max-len"`
	InboxTTL          time.Duration `json:"inbox-ttl"`

	Durability string `json:"durability"`
	// RedisWaitReplicas is nil until a flag, variable or the file sets
	// it: its default depends on the --redis topology.
	RedisWaitReplicas *int          `json:"redis-wait-replicas"`
	RedisWaitTimeout  time.Duration `json:"redis-wait-timeout"`

	// redis is Redis, Durability and the wait settings, checked.
	redis redisSetup
	// redisSet says --redis was given (flag, variable or file), which
	// makes --dev use that Redis instead of running its own.
	redisSet bool

	Heartbeat    time.Duration `json:"heartbeat"`
	NodeTTL      time.Duration `json:"node-ttl"`
	MaxFrame     int           `json:"max-frame"`
	MaxConns     int           `json:"max-conns"`
	ConnectRate  float64       `json:"connect-rate"`
	AckTimeout   time.Duration `json:"ack-timeout"`
	DrainSpread  time.Duration `json:"drain-spread"`
	DrainTimeout time.Duration `json:"drain-timeout"`
	GCPercent    int           `json:"gc-percent"`

	TraceMemory string        `json:"trace-memory"`
	TraceTTL    time.Duration `json:"trace-ttl"`

	// Upstreams maps a business to its webhook URL; config file only.
	Upstreams map[string]string `json:"upstreams"`

	bridgeOptions
}

func flags() []cli.Flag {
	env := func(name string) []string { return []string{"PUSHD_" + name} }
	return append([]cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "JSON file with any of these settings (apps and keys live in the region's metadata: pushctl app)", EnvVars: env("CONFIG")},
		&cli.BoolFlag{Name: "check-config", Usage: "check the configuration and exit"},
		&cli.BoolFlag{Name: "dev", Usage: "run a one-node dev region on localhost with its own redis-server", EnvVars: env("DEV")},
		&cli.StringFlag{Name: "node-id", Usage: "this node's id in the region (default: host name)", EnvVars: env("NODE_ID")},
		&cli.StringFlag{Name: "data-dir", Usage: "where the node keeps its state (default /var/lib/pushd; ./pushd-dev with --dev)", EnvVars: env("DATA_DIR")},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: env("LOG_LEVEL")},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json", EnvVars: env("LOG_FORMAT")},
		&cli.StringFlag{Name: "ws-addr", Value: ":8080", Usage: "device WebSocket listener (/v1/ws, /healthz, /metrics)", EnvVars: env("WS_ADDR")},
		&cli.StringFlag{Name: "tcp-addr", Value: ":8081", Usage: "device raw TCP listener; empty disables it", EnvVars: env("TCP_ADDR")},
		&cli.StringFlag{Name: "push-addr", Value: ":8090", Usage: "push API listener", EnvVars: env("PUSH_ADDR")},
		&cli.StringFlag{Name: "admin-addr", Value: ":8091", Usage: "admin API listener (pushctl and other nodes)", EnvVars: env("ADMIN_ADDR")},
		&cli.StringFlag{Name: "raft-addr", Value: ":8092", Usage: "Raft listener for region metadata", EnvVars: env("RAFT_ADDR")},
		&cli.StringFlag{Name: "raft-advertise", Usage: "host:port other nodes reach this node's Raft at (required when --raft-addr binds all interfaces)", EnvVars: env("RAFT_ADVERTISE")},
		&cli.StringFlag{Name: "advertise-push", Usage: "host:port business servers should use for the push API", EnvVars: env("ADVERTISE_PUSH")},
		&cli.StringFlag{Name: "advertise-admin", Usage: "host:port other nodes reach this node's admin API at", EnvVars: env("ADVERTISE_ADMIN")},
		&cli.IntFlag{Name: "weight", Value: 100, Usage: "this node's share of new devices in dispatch (0-1000)", EnvVars: env("WEIGHT")},
		&cli.BoolFlag{Name: "bootstrap", Usage: "form a new region with this node as its first member (safe on every start)", EnvVars: env("BOOTSTRAP")},
		&cli.StringFlag{Name: "join", Usage: "admin address (host:port) of a member of the region to join", EnvVars: env("JOIN")},
		&cli.StringFlag{Name: "join-token", Usage: "admin-role token for --join (prefer --join-token-file: a command line is visible to every user of the host)", EnvVars: env("JOIN_TOKEN")},
		&cli.StringFlag{Name: "join-token-file", Usage: "file holding the admin-role token for --join", EnvVars: env("JOIN_TOKEN_FILE"), TakesFile: true},
		&cli.StringFlag{Name: "region-ca", Usage: "the region CA's certificate (PEM): with --join, to check the member joined through on the first start (a copy of any member's <data-dir>/tls/ca.crt); with --bootstrap and --region-ca-key, a CA of your own for the region", EnvVars: env("REGION_CA"), TakesFile: true},
		&cli.StringFlag{Name: "region-ca-key", Usage: "with --bootstrap: the key of --region-ca, copied into <data-dir>/tls/ca.key instead of making a new CA", EnvVars: env("REGION_CA_KEY"), TakesFile: true},
		&cli.StringSliceFlag{Name: "tls-name", Usage: "another host name or address for this node's certificate, besides its Raft and admin addresses and localhost (repeatable)", EnvVars: env("TLS_NAME")},
		&cli.BoolFlag{Name: "insecure-plaintext", Usage: "run Raft and the admin API without TLS outside --dev: anyone on the network can join Raft and read tokens (logged loudly at every start)", EnvVars: env("INSECURE_PLAINTEXT")},
		&cli.BoolFlag{Name: "dev-tls", Usage: "with --dev: TLS on every hop (a dev CA in the data dir; Raft and admin over mutual TLS, the push API and devices over TLS, the dev Redis with TLS and an ACL user)", EnvVars: env("DEV_TLS")},
		&cli.StringFlag{Name: "push-tls-cert", Usage: "PEM certificate: serve the push API over TLS (reloaded on SIGHUP)", EnvVars: env("PUSH_TLS_CERT"), TakesFile: true},
		&cli.StringFlag{Name: "push-tls-key", Usage: "PEM key for --push-tls-cert", EnvVars: env("PUSH_TLS_KEY"), TakesFile: true},
		&cli.StringFlag{Name: "advertise-ws", Usage: "host:port devices should use for WebSocket (default: the bound address)", EnvVars: env("ADVERTISE_WS")},
		&cli.StringFlag{Name: "advertise-tcp", Usage: "host:port devices should use for TCP", EnvVars: env("ADVERTISE_TCP")},
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate: serve the device listeners over TLS", EnvVars: env("TLS_CERT")},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM key for --tls-cert", EnvVars: env("TLS_KEY")},
		&cli.StringSliceFlag{Name: "allowed-origin", Usage: "browser Origin allowed to open a WebSocket (repeatable; default: any)", EnvVars: env("ALLOWED_ORIGIN")},
		&cli.StringFlag{Name: "redis", Value: "redis://127.0.0.1:6379/0", Usage: "the region's Redis: redis://host:port/db (one server; rediss:// over TLS), redis-sentinel://host:port,host:port,…/master (the primary Sentinel names) or redis-cluster://host:port,host:port,… (a Redis Cluster); the password goes in --redis-password-file; with --dev, a Redis to use instead of its own", EnvVars: env("REDIS")},
		&cli.StringFlag{Name: "redis-user", Usage: "Redis ACL user (default: Redis's default user)", EnvVars: env("REDIS_USER")},
		&cli.StringFlag{Name: "redis-password-file", Usage: "file holding the Redis user's password (mode 0600 or stricter)", EnvVars: env("REDIS_PASSWORD_FILE"), TakesFile: true},
		&cli.StringFlag{Name: "redis-ca", Usage: "CA certificates (PEM) that sign Redis's TLS certificate (default: the region CA, else the system's)", EnvVars: env("REDIS_CA"), TakesFile: true},
		&cli.StringFlag{Name: "durability", Value: "strict", Usage: "strict: every primary runs appendfsync always and each push waits for --redis-wait-replicas replicas; fast: no waiting, any appendfsync (a crash or failover can lose about a second of acknowledged pushes)", EnvVars: env("DURABILITY")},
		&cli.IntFlag{Name: "redis-wait-replicas", Usage: "replicas that must confirm a push before it is answered stored, in strict mode (default: 1 with redis-sentinel:// or redis-cluster://, 0 with one server)", EnvVars: env("REDIS_WAIT_REPLICAS")},
		&cli.DurationFlag{Name: "redis-wait-timeout", Value: 500 * time.Millisecond, Usage: "how long a push waits for those replicas before it is answered 503 (10ms..1s)", EnvVars: env("REDIS_WAIT_TIMEOUT")},
		&cli.Int64Flag{Name: "inbox-max-len", Value: 1000, Usage: "unacked messages kept per device", EnvVars: env("INBOX_MAX_LEN")},
		&cli.DurationFlag{Name: "inbox-ttl", Value: 72 * time.Hour, Usage: "how long an idle inbox (and any message) is kept", EnvVars: env("INBOX_TTL")},
		&cli.DurationFlag{Name: "heartbeat", Value: 30 * time.Second, Usage: "device PING interval; two missed close the connection", EnvVars: env("HEARTBEAT")},
		&cli.DurationFlag{Name: "node-ttl", Value: 10 * time.Second, Usage: "how long a node may miss its heartbeats (one a second) before the others take it for dead and take over its deliveries; the same on every node", EnvVars: env("NODE_TTL")},
		&cli.IntFlag{Name: "max-frame", Value: 16 << 10, Usage: "largest frame a device may send (bytes, ≤ 65536)", EnvVars: env("MAX_FRAME")},
		&cli.IntFlag{Name: "max-conns", Value: 1_000_000, Usage: "device connections this node accepts", EnvVars: env("MAX_CONNS")},
		&cli.Float64Flag{Name: "connect-rate", Value: 20, Usage: "new connections per second per source IP (negative: no limit)", EnvVars: env("CONNECT_RATE")},
		&cli.DurationFlag{Name: "ack-timeout", Value: 10 * time.Second, Usage: "resend a message not acked within this", EnvVars: env("ACK_TIMEOUT")},
		&cli.IntFlag{Name: "gc-percent", Value: 50, Usage: "Go GC target percentage; a node holding many idle connections has a large, stable heap, and 50 keeps RSS near it (GOGC in the environment wins)", EnvVars: env("GC_PERCENT")},
		&cli.DurationFlag{Name: "drain-spread", Value: 5 * time.Second, Usage: "how long a draining or stopping node takes to send its devices to the others, in paced batches", EnvVars: env("DRAIN_SPREAD")},
		&cli.DurationFlag{Name: "drain-timeout", Value: 15 * time.Second, Usage: "bound on the whole shutdown after SIGTERM (the unit's TimeoutStopSec must be longer); the drain takes at most half of it", EnvVars: env("DRAIN_TIMEOUT")},
		&cli.StringFlag{Name: "trace-memory", Value: "64MiB", Usage: "memory for message trace events (pushctl trace), e.g. 64MiB or 512KiB; 0 turns tracing off", EnvVars: env("TRACE_MEMORY")},
		&cli.DurationFlag{Name: "trace-ttl", Value: 10 * time.Minute, Usage: "how long message trace events are kept at most", EnvVars: env("TRACE_TTL")},
	}, bridgeFlags()...)
}

// loadOptions merges the config file under the flags and environment.
func loadOptions(c *cli.Context) (options, error) {
	var o options
	if path := c.String("config"); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return o, fmt.Errorf("--config: %w", err)
		}
		if err := decodeStrict(b, &o); err != nil {
			return o, fmt.Errorf("--config %s: %w", path, err)
		}
		o.Config = path
	}
	// A flag or variable that was set wins; otherwise the file's value;
	// otherwise the flag's default.
	str := func(dst *string, name string) {
		if c.IsSet(name) || *dst == "" {
			*dst = c.String(name)
		}
	}
	for name, dst := range map[string]*string{
		"node-id": &o.NodeID, "data-dir": &o.DataDir, "log-level": &o.LogLevel, "log-format": &o.LogFormat,
		"ws-addr": &o.WSAddr, "tcp-addr": &o.TCPAddr, "push-addr": &o.PushAddr, "admin-addr": &o.AdminAddr,
		"raft-addr": &o.RaftAddr, "raft-advertise": &o.RaftAdvertise, "advertise-ws": &o.AdvertiseWS,
		"advertise-tcp": &o.AdvertiseTCP, "advertise-push": &o.AdvertisePush, "advertise-admin": &o.AdvertiseAdmin,
		"tls-cert": &o.TLSCert, "tls-key": &o.TLSKey, "join": &o.Join, "join-token": &o.JoinToken,
		"join-token-file": &o.JoinTokenFile, "region-ca": &o.RegionCA, "region-ca-key": &o.RegionCAKey,
		"push-tls-cert": &o.PushTLSCert, "push-tls-key": &o.PushTLSKey, "redis-user": &o.RedisUser,
		"redis-password-file": &o.RedisPasswordFile, "redis-ca": &o.RedisCA, "durability": &o.Durability,
		"trace-memory": &o.TraceMemory,
	} {
		str(dst, name)
	}
	o.redisSet = c.IsSet("redis") || o.Redis != ""
	str(&o.Redis, "redis")
	if c.IsSet("redis-wait-replicas") {
		n := c.Int("redis-wait-replicas")
		o.RedisWaitReplicas = &n
	}
	for name, dst := range map[string]*time.Duration{
		"inbox-ttl": &o.InboxTTL, "heartbeat": &o.Heartbeat, "node-ttl": &o.NodeTTL, "ack-timeout": &o.AckTimeout, "drain-timeout": &o.DrainTimeout,
		"drain-spread": &o.DrainSpread, "trace-ttl": &o.TraceTTL, "redis-wait-timeout": &o.RedisWaitTimeout,
	} {
		if c.IsSet(name) || *dst == 0 {
			*dst = c.Duration(name)
		}
	}
	for name, dst := range map[string]*int{"max-frame": &o.MaxFrame, "max-conns": &o.MaxConns, "weight": &o.Weight, "gc-percent": &o.GCPercent} {
		if c.IsSet(name) || *dst == 0 {
			*dst = c.Int(name)
		}
	}
	if c.IsSet("inbox-max-len") || o.InboxMaxLen == 0 {
		o.InboxMaxLen = c.Int64("inbox-max-len")
	}
	if c.IsSet("connect-rate") || o.ConnectRate == 0 {
		o.ConnectRate = c.Float64("connect-rate")
	}
	if c.IsSet("dev") || !o.Dev {
		o.Dev = c.Bool("dev")
	}
	for name, dst := range map[string]*bool{"bootstrap": &o.Bootstrap, "insecure-plaintext": &o.InsecurePlaintext, "dev-tls": &o.DevTLS} {
		if c.IsSet(name) || !*dst {
			*dst = c.Bool(name)
		}
	}
	if c.IsSet("allowed-origin") || o.AllowedOrigins == nil {
		o.AllowedOrigins = c.StringSlice("allowed-origin")
	}
	if c.IsSet("tls-name") || o.TLSNames == nil {
		o.TLSNames = c.StringSlice("tls-name")
	}
	if o.NodeID == "" {
		o.NodeID, _ = os.Hostname()
	}
	if err := o.loadBridge(c, o.Dev); err != nil {
		return o, err
	}
	if o.DataDir == "" {
		o.DataDir = "/var/lib/pushd"
		if o.Dev {
			o.DataDir = devDataDir
		}
	}
	if o.Dev {
		// A dev region listens on loopback unless told otherwise.
		for _, a := range []*string{&o.WSAddr, &o.TCPAddr, &o.PushAddr, &o.AdminAddr, &o.RaftAddr} {
			if strings.HasPrefix(*a, ":") {
				*a = "127.0.0.1" + *a
			}
		}
	}
	switch {
	case o.LogFormat != "text" && o.LogFormat != "json":
		return o, fmt.Errorf("--log-format %q: want text or json", o.LogFormat)
	case o.InboxMaxLen < 1:
		return o, fmt.Errorf("--inbox-max-len %d: must be positive", o.InboxMaxLen)
	case o.InboxTTL < time.Minute:
		return o, fmt.Errorf("--inbox-ttl %s: must be at least a minute", o.InboxTTL)
	case (o.TLSCert == "") != (o.TLSKey == ""):
		return o, fmt.Errorf("--tls-cert and --tls-key go together")
	case o.ConnectRate == 0:
		return o, fmt.Errorf("--connect-rate 0 would refuse every connection; use a negative value for no limit")
	case o.Join != "" && (o.Bootstrap || o.Dev):
		return o, fmt.Errorf("--join adds this node to an existing region; it goes with neither --bootstrap nor --dev")
	case o.JoinToken != "" && o.JoinTokenFile != "":
		return o, fmt.Errorf("--join-token and --join-token-file exclude each other")
	case o.Join != "" && o.JoinToken == "" && o.JoinTokenFile == "":
		return o, fmt.Errorf("--join needs --join-token-file (a file holding an admin-role token of the region)")
	case o.DevTLS && !o.Dev:
		return o, fmt.Errorf("--dev-tls goes with --dev; outside it the region runs TLS unless --insecure-plaintext")
	case o.InsecurePlaintext && o.Dev:
		return o, fmt.Errorf("--insecure-plaintext is for a region outside --dev; --dev runs without TLS already")
	case o.InsecurePlaintext && (o.RegionCA != "" || o.RegionCAKey != "" || len(o.TLSNames) > 0):
		return o, fmt.Errorf("--insecure-plaintext runs the region without TLS; it goes with none of --region-ca, --region-ca-key and --tls-name")
	case o.RegionCAKey != "" && (o.RegionCA == "" || !o.Bootstrap):
		return o, fmt.Errorf("--region-ca-key goes with --region-ca and --bootstrap: it brings the region's first node a CA of your own")
	case (o.PushTLSCert == "") != (o.PushTLSKey == ""):
		return o, fmt.Errorf("--push-tls-cert and --push-tls-key go together")
	case o.Dev && o.DevTLS && (o.PushTLSCert != "" || o.TLSCert != ""):
		return o, fmt.Errorf("--dev-tls serves the push API and devices with the dev CA's certificate; it goes with neither --push-tls-cert nor --tls-cert")
	case o.NodeTTL < 3*time.Second:
		return o, fmt.Errorf("--node-ttl %s: must be at least 3s (a node heartbeats every second)", o.NodeTTL)
	case o.GCPercent < 10 || o.GCPercent > 1000:
		return o, fmt.Errorf("--gc-percent %d: must be 10..1000", o.GCPercent)
	case o.Weight < 0 || o.Weight > 1000:
		return o, fmt.Errorf("--weight %d: must be 0..1000", o.Weight)
	case o.DrainSpread < 0:
		return o, fmt.Errorf("--drain-spread %s: must not be negative", o.DrainSpread)
	case o.DrainTimeout < 2*o.DrainSpread+2*time.Second:
		return o, fmt.Errorf("--drain-timeout %s: must be at least twice --drain-spread (%s) plus 2s, for the rest of the shutdown", o.DrainTimeout, o.DrainSpread)
	case o.TraceTTL <= 0:
		return o, fmt.Errorf("--trace-ttl %s: must be positive", o.TraceTTL)
	}
	if _, err := parseSize(o.TraceMemory); err != nil {
		return o, fmt.Errorf("--trace-memory %q: %w", o.TraceMemory, err)
	}
	var err error
	if o.redis, err = parseRedisSetup(&o); err != nil {
		return o, err
	}
	return o, nil
}

// parseSize reads a memory size: a whole number of bytes, or with a
// unit KiB, MiB or GiB ("64MiB").
func parseSize(s string) (int, error) {
	num, mult := s, 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = v, u.mult
			break
		}
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("want a size like 64MiB, 512KiB or 0")
	}
	return n * mult, nil
}

// decodeStrict decodes a config file, refusing unknown keys so a typo is
// an error rather than a silently ignored setting. Durations are strings
// like "30s".
func decodeStrict(b []byte, o *options) error {
	type fileOptions options
	aux := struct {
		*fileOptions
		InboxTTL         string `json:"inbox-ttl"`
		Heartbeat        string `json:"heartbeat"`
		NodeTTL          string `json:"node-ttl"`
		AckTimeout       string `json:"ack-timeout"`
		DrainSpread      string `json:"drain-spread"`
		DrainTimeout     string `json:"drain-timeout"`
		TraceTTL         string `json:"trace-ttl"`
		RedisWaitTimeout string `json:"redis-wait-timeout"`
	}{fileOptions: (*fileOptions)(o)}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&aux); err != nil {
		return err
	}
	for _, d := range []struct {
		s   string
		dst *time.Duration
		key string
	}{{aux.InboxTTL, &o.InboxTTL, "inbox-ttl"}, {aux.Heartbeat, &o.Heartbeat, "heartbeat"}, {aux.NodeTTL, &o.NodeTTL, "node-ttl"},
		{aux.AckTimeout, &o.AckTimeout, "ack-timeout"}, {aux.DrainTimeout, &o.DrainTimeout, "drain-timeout"},
		{aux.DrainSpread, &o.DrainSpread, "drain-spread"}, {aux.TraceTTL, &o.TraceTTL, "trace-ttl"},
		{aux.RedisWaitTimeout, &o.RedisWaitTimeout, "redis-wait-timeout"}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil {
			return fmt.Errorf("%s: %w", d.key, err)
		}
		*d.dst = v
	}
	return nil
}

// nodeConfig turns the options into the appliance's Config.
func (o *options) nodeConfig() (appliance.Config, error) {
	cfg := appliance.Config{
		NodeID:            o.NodeID,
		Region:            o.Region,
		WSAddr:            o.WSAddr,
		TCPAddr:           o.TCPAddr,
		AdvertiseWS:       o.AdvertiseWS,
		AdvertiseTCP:      o.AdvertiseTCP,
		AllowedOrigins:    o.AllowedOrigins,
		HeartbeatInterval: o.Heartbeat,
		MaxFrame:          o.MaxFrame,
		MaxConns:          o.MaxConns,
		ConnectRate:       o.ConnectRate,
		AckTimeout:        o.AckTimeout,
		AckBackoffMax:     max(6*o.AckTimeout, 60*time.Second),
		Upstreams:         o.Upstreams,
		RedisTopology:     string(o.redis.url.Topology),
		Durability:        o.redis.durability,
		DrainSpread:       o.DrainSpread,
		TraceTTL:          o.TraceTTL,
	}
	// loadOptions checked the size.
	if cfg.TraceMemory, _ = parseSize(o.TraceMemory); cfg.TraceMemory == 0 {
		cfg.TraceMemory = -1 // 0 turns tracing off; the Config's zero means the default
	}
	if o.DrainSpread == 0 {
		cfg.DrainSpread = time.Nanosecond // 0: at once; the Config's zero means the default
	}
	if o.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return cfg, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return cfg, nil
}

func (o *options) streamsConfig() streams.Config {
	return streams.Config{InboxMaxLen: o.InboxMaxLen, InboxTTL: o.InboxTTL, NodeTTL: o.NodeTTL,
		WaitReplicas: o.redis.waitReplicas, WaitTimeout: o.redis.waitTimeout}
}

// regionTLS reports whether Raft and the admin API run TLS: always
// outside --dev unless --insecure-plaintext says otherwise, and in a dev
// region with --dev-tls.
func (o *options) regionTLS() bool {
	if o.Dev {
		return o.DevTLS
	}
	return !o.InsecurePlaintext
}

// joinToken is the admin-role token --join presents, from
// --join-token-file or --join-token.
func (o *options) joinToken() (string, error) {
	if o.JoinTokenFile == "" {
		return o.JoinToken, nil
	}
	return readSecretFile(o.JoinTokenFile, "--join-token-file")
}

// readSecretFile reads a token or password kept in a file, trimmed of
// surrounding white space. A file other users may read is refused, as
// ssh refuses such a key: the secret would not be one any more.
func readSecretFile(path, flag string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s %s: group or others may read it (mode %04o); chmod 600 it", flag, path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	secret := strings.TrimSpace(string(b))
	if secret == "" {
		return "", fmt.Errorf("%s %s is empty", flag, path)
	}
	return secret, nil
}

// check is --check-config: everything that can be checked without
// starting, files included.
func (o *options) check() error {
	if _, err := o.nodeConfig(); err != nil {
		return err
	}
	if o.PushTLSCert != "" {
		if _, err := loadKeyPair(o.PushTLSCert, o.PushTLSKey); err != nil {
			return fmt.Errorf("--push-tls-cert/--push-tls-key: %w", err)
		}
	}
	if o.Join != "" {
		if _, err := o.joinToken(); err != nil {
			return err
		}
	}
	r := o.redis
	return r.credentials(o, nil)
}
