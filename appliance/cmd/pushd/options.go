package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
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
	TLSCert        string   `json:"tls-cert"`
	TLSKey         string   `json:"tls-key"`
	AllowedOrigins []string `json:"allowed-origin"`

	Redis       string        `json:"redis"`
	InboxMaxLen int64         `json:"inbox-max-len"`
	InboxTTL    time.Duration `json:"inbox-ttl"`

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
	DrainTimeout time.Duration `json:"drain-timeout"`
	GCPercent    int           `json:"gc-percent"`

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
		&cli.StringFlag{Name: "join-token", Usage: "admin-role token for --join", EnvVars: env("JOIN_TOKEN")},
		&cli.StringFlag{Name: "advertise-ws", Usage: "host:port devices should use for WebSocket (default: the bound address)", EnvVars: env("ADVERTISE_WS")},
		&cli.StringFlag{Name: "advertise-tcp", Usage: "host:port devices should use for TCP", EnvVars: env("ADVERTISE_TCP")},
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate: serve the device listeners over TLS", EnvVars: env("TLS_CERT")},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM key for --tls-cert", EnvVars: env("TLS_KEY")},
		&cli.StringSliceFlag{Name: "allowed-origin", Usage: "browser Origin allowed to open a WebSocket (repeatable; default: any)", EnvVars: env("ALLOWED_ORIGIN")},
		&cli.StringFlag{Name: "redis", Value: "redis://127.0.0.1:6379/0", Usage: "the region's Redis: redis://host:port/db (one server), redis-sentinel://host:port,host:port,…/master (the primary Sentinel names) or redis-cluster://host:port,host:port,… (a Redis Cluster); with --dev, a Redis to use instead of its own", EnvVars: env("REDIS")},
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
		&cli.DurationFlag{Name: "drain-timeout", Value: 10 * time.Second, Usage: "how long shutdown waits for connections to drain", EnvVars: env("DRAIN_TIMEOUT")},
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
		"durability": &o.Durability,
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
		"redis-wait-timeout": &o.RedisWaitTimeout,
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
	if c.IsSet("bootstrap") || !o.Bootstrap {
		o.Bootstrap = c.Bool("bootstrap")
	}
	if c.IsSet("allowed-origin") || o.AllowedOrigins == nil {
		o.AllowedOrigins = c.StringSlice("allowed-origin")
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
			o.DataDir = "pushd-dev"
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
	case o.Join != "" && o.JoinToken == "":
		return o, fmt.Errorf("--join needs --join-token (an admin-role token of the region)")
	case o.NodeTTL < 3*time.Second:
		return o, fmt.Errorf("--node-ttl %s: must be at least 3s (a node heartbeats every second)", o.NodeTTL)
	case o.GCPercent < 10 || o.GCPercent > 1000:
		return o, fmt.Errorf("--gc-percent %d: must be 10..1000", o.GCPercent)
	case o.Weight < 0 || o.Weight > 1000:
		return o, fmt.Errorf("--weight %d: must be 0..1000", o.Weight)
	}
	var err error
	if o.redis, err = parseRedisSetup(&o); err != nil {
		return o, err
	}
	return o, nil
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
		DrainTimeout     string `json:"drain-timeout"`
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
