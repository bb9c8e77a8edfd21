package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/bridge"
)

// bridgeOptions are the region's name and its Kafka bridge to other
// regions, part of options (JSON names are the flag names).
type bridgeOptions struct {
	Region              string   `json:"region"`
	BridgeBrokers       []string `json:"bridge-brokers"`
	BridgePeers         []string `json:"bridge-peers"`
	BridgeTopic         string   `json:"bridge-topic"`
	BridgeGroup         string   `json:"bridge-group"`
	BridgeBufferRecords int      `json:"bridge-buffer-records"`
	BridgeBufferBytes   int64    `json:"bridge-buffer-bytes"`
	BridgeTLS           bool     `json:"bridge-tls"`
	BridgeTLSCA         string   `json:"bridge-tls-ca"`
	BridgeTLSCert       string   `json:"bridge-tls-cert"`
	BridgeTLSKey        string   `json:"bridge-tls-key"`
	BridgeTLSServerName string   `json:"bridge-tls-server-name"`
	BridgeSASL          string   `json:"bridge-sasl"`
	BridgeSASLUser      string   `json:"bridge-sasl-user"`
	BridgeSASLPassword  string   `json:"bridge-sasl-password"`
	DevKafka            string   `json:"dev-kafka"`
}

func bridgeFlags() []cli.Flag {
	env := func(name string) []string { return []string{"PUSHD_" + name} }
	return []cli.Flag{
		&cli.StringFlag{Name: "region", Usage: "this region's name, the same on every node of it; other regions' pushes name it in \"regions\" (default \"default\")", EnvVars: env("REGION")},
		&cli.StringSliceFlag{Name: "bridge-brokers", Usage: "Kafka seed brokers host:port (repeatable or comma separated): turns on the bridge to other regions", EnvVars: env("BRIDGE_BROKERS")},
		&cli.StringSliceFlag{Name: "bridge-peers", Usage: "the other regions the bridge exchanges pushes with (repeatable or comma separated)", EnvVars: env("BRIDGE_PEERS")},
		&cli.StringFlag{Name: "bridge-topic", Usage: "topic each region produces to; {region} is replaced by its name (default " + bridge.DefaultTopic + ")", EnvVars: env("BRIDGE_TOPIC")},
		&cli.StringFlag{Name: "bridge-group", Usage: "this region's consumer group (default pushd-bridge.<region>)", EnvVars: env("BRIDGE_GROUP")},
		&cli.IntFlag{Name: "bridge-buffer-records", Usage: fmt.Sprintf("records a node buffers for Kafka before pushes answer bridged: failed (default %d)", bridge.DefaultBufferRecords), EnvVars: env("BRIDGE_BUFFER_RECORDS")},
		&cli.Int64Flag{Name: "bridge-buffer-bytes", Usage: fmt.Sprintf("bytes a node buffers for Kafka before pushes answer bridged: failed (default %d)", bridge.DefaultBufferBytes), EnvVars: env("BRIDGE_BUFFER_BYTES")},
		&cli.BoolFlag{Name: "bridge-tls", Usage: "connect to the brokers over TLS (system roots unless --bridge-tls-ca)", EnvVars: env("BRIDGE_TLS")},
		&cli.StringFlag{Name: "bridge-tls-ca", Usage: "PEM CA bundle the brokers' certificates are checked against (implies --bridge-tls)", EnvVars: env("BRIDGE_TLS_CA"), TakesFile: true},
		&cli.StringFlag{Name: "bridge-tls-cert", Usage: "PEM client certificate for the brokers (implies --bridge-tls)", EnvVars: env("BRIDGE_TLS_CERT"), TakesFile: true},
		&cli.StringFlag{Name: "bridge-tls-key", Usage: "PEM key for --bridge-tls-cert", EnvVars: env("BRIDGE_TLS_KEY"), TakesFile: true},
		&cli.StringFlag{Name: "bridge-tls-server-name", Usage: "name the brokers' certificates must carry (default: the broker's host)", EnvVars: env("BRIDGE_TLS_SERVER_NAME")},
		&cli.StringFlag{Name: "bridge-sasl", Usage: "SASL mechanism for the brokers: plain, scram-sha-256 or scram-sha-512", EnvVars: env("BRIDGE_SASL")},
		&cli.StringFlag{Name: "bridge-sasl-user", Usage: "SASL user", EnvVars: env("BRIDGE_SASL_USER")},
		&cli.StringFlag{Name: "bridge-sasl-password", Usage: "SASL password (prefer $PUSHD_BRIDGE_SASL_PASSWORD: flags show in ps)", EnvVars: env("BRIDGE_SASL_PASSWORD")},
		&cli.StringFlag{Name: "dev-kafka", Usage: "with --dev: run an embedded Kafka (kfake, data under <data-dir>/kafka) on this loopback host:port, and bridge through it unless --bridge-brokers names others", EnvVars: env("DEV_KAFKA")},
	}
}

// loadBridge merges the bridge's flags and environment over the file's
// values and checks them.
func (o *bridgeOptions) loadBridge(c *cli.Context, dev bool) error {
	for name, dst := range map[string]*string{
		"region": &o.Region, "bridge-topic": &o.BridgeTopic, "bridge-group": &o.BridgeGroup,
		"bridge-tls-ca": &o.BridgeTLSCA, "bridge-tls-cert": &o.BridgeTLSCert, "bridge-tls-key": &o.BridgeTLSKey,
		"bridge-tls-server-name": &o.BridgeTLSServerName, "bridge-sasl": &o.BridgeSASL, "bridge-sasl-user": &o.BridgeSASLUser,
		"bridge-sasl-password": &o.BridgeSASLPassword, "dev-kafka": &o.DevKafka,
	} {
		if c.IsSet(name) {
			*dst = c.String(name)
		}
	}
	for name, dst := range map[string]*[]string{"bridge-brokers": &o.BridgeBrokers, "bridge-peers": &o.BridgePeers} {
		if c.IsSet(name) {
			*dst = nil
			for _, v := range c.StringSlice(name) {
				for _, s := range strings.Split(v, ",") {
					if s = strings.TrimSpace(s); s != "" {
						*dst = append(*dst, s)
					}
				}
			}
		}
	}
	if c.IsSet("bridge-buffer-records") {
		o.BridgeBufferRecords = c.Int("bridge-buffer-records")
	}
	if c.IsSet("bridge-buffer-bytes") {
		o.BridgeBufferBytes = c.Int64("bridge-buffer-bytes")
	}
	if c.IsSet("bridge-tls") {
		o.BridgeTLS = c.Bool("bridge-tls")
	}
	if o.Region == "" {
		o.Region = appliance.DefaultRegion
	}
	bridged := len(o.BridgeBrokers) > 0 || o.DevKafka != ""
	switch {
	case !appliance.ValidRegion(o.Region):
		return fmt.Errorf("--region %q: use 1-128 letters, digits and ._:-, and not \"all\"", o.Region)
	case o.DevKafka != "" && !dev:
		return errors.New("--dev-kafka runs an embedded Kafka for development and goes with --dev only")
	case !bridged && (len(o.BridgePeers) > 0 || o.BridgeTopic != "" || o.BridgeGroup != "" || o.BridgeTLS ||
		o.BridgeTLSCA != "" || o.BridgeTLSCert != "" || o.BridgeSASL != "" || o.BridgeBufferRecords != 0 || o.BridgeBufferBytes != 0):
		return errors.New("the --bridge-* settings need --bridge-brokers (or --dev-kafka)")
	case bridged && len(o.BridgePeers) == 0:
		return errors.New("the bridge needs --bridge-peers: the other regions it exchanges pushes with")
	case (o.BridgeTLSCert == "") != (o.BridgeTLSKey == ""):
		return errors.New("--bridge-tls-cert and --bridge-tls-key go together")
	case o.BridgeBufferRecords < 0 || o.BridgeBufferBytes < 0:
		return errors.New("--bridge-buffer-records and --bridge-buffer-bytes must not be negative")
	}
	if o.DevKafka != "" {
		host, _, err := net.SplitHostPort(o.DevKafka)
		if err != nil || (host != "127.0.0.1" && host != "localhost") {
			return fmt.Errorf("--dev-kafka %q: want 127.0.0.1:PORT (the embedded Kafka listens on loopback only)", o.DevKafka)
		}
	}
	switch strings.ToLower(o.BridgeSASL) {
	case "":
		if o.BridgeSASLUser != "" || o.BridgeSASLPassword != "" {
			return errors.New("--bridge-sasl-user and --bridge-sasl-password need --bridge-sasl")
		}
	case "plain", "scram-sha-256", "scram-sha-512":
		if o.BridgeSASLUser == "" || o.BridgeSASLPassword == "" {
			return fmt.Errorf("--bridge-sasl %s needs --bridge-sasl-user and --bridge-sasl-password", o.BridgeSASL)
		}
	default:
		return fmt.Errorf("--bridge-sasl %q: want plain, scram-sha-256 or scram-sha-512", o.BridgeSASL)
	}
	return nil
}

// bridged reports whether the node runs a bridge.
func (o *bridgeOptions) bridged() bool { return len(o.BridgeBrokers) > 0 || o.DevKafka != "" }

// bridgeConfig turns the options into the bridge's Config; brokers are
// the embedded Kafka's when the options name none.
func (o *bridgeOptions) bridgeConfig(devBrokers []string) (bridge.Config, error) {
	cfg := bridge.Config{Brokers: o.BridgeBrokers, Peers: o.BridgePeers, Topic: o.BridgeTopic, Group: o.BridgeGroup,
		BufferRecords: o.BridgeBufferRecords, BufferBytes: o.BridgeBufferBytes}
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = devBrokers
	}
	if o.BridgeTLS || o.BridgeTLSCA != "" || o.BridgeTLSCert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.BridgeTLSServerName}
		if o.BridgeTLSCA != "" {
			pem, err := os.ReadFile(o.BridgeTLSCA)
			if err != nil {
				return cfg, fmt.Errorf("--bridge-tls-ca: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return cfg, fmt.Errorf("--bridge-tls-ca %s: no PEM certificate in it", o.BridgeTLSCA)
			}
		}
		if o.BridgeTLSCert != "" {
			cert, err := tls.LoadX509KeyPair(o.BridgeTLSCert, o.BridgeTLSKey)
			if err != nil {
				return cfg, fmt.Errorf("--bridge-tls-cert/--bridge-tls-key: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cfg.TLS = tc
	}
	cfg.SASL = saslMechanism(o.BridgeSASL, o.BridgeSASLUser, o.BridgeSASLPassword)
	return cfg, nil
}

// saslMechanism is the SASL mechanism named (checked by loadBridge), nil
// for none.
func saslMechanism(name, user, pass string) sasl.Mechanism {
	switch strings.ToLower(name) {
	case "plain":
		return plain.Auth{User: user, Pass: pass}.AsMechanism()
	case "scram-sha-256":
		return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	case "scram-sha-512":
		return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	}
	return nil
}

// devKafkaPartitions is the partitions of the embedded Kafka's topics.
const devKafkaPartitions = 8

// startDevKafka runs the embedded Kafka of --dev-kafka on addr, its data
// under dataDir/kafka so a restart keeps topics, records and the groups'
// offsets. The caller closes it after the node stopped.
func startDevKafka(addr, dataDir string, log *slog.Logger) (*kfake.Cluster, error) {
	_, port, _ := net.SplitHostPort(addr)
	var p int
	if _, err := fmt.Sscan(port, &p); err != nil {
		return nil, fmt.Errorf("--dev-kafka %q: bad port", addr)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(p), kfake.DataDir(filepath.Join(dataDir, "kafka")),
		kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(devKafkaPartitions))
	if err != nil {
		return nil, fmt.Errorf("start the embedded Kafka on %s: %w", addr, err)
	}
	log.Info("embedded Kafka (kfake) listening: for development only", "addr", c.ListenAddrs()[0],
		"data", filepath.Join(dataDir, "kafka"))
	return c, nil
}

// startBridge builds and starts the node's bridge, nil when it runs none.
func startBridge(o *options, node *appliance.Node, devBrokers []string, log *slog.Logger) (*bridge.Bridge, error) {
	if !o.bridged() {
		return nil, nil
	}
	cfg, err := o.bridgeConfig(devBrokers)
	if err != nil {
		return nil, usageError{err}
	}
	b, err := bridge.New(node, cfg, log)
	if err != nil {
		return nil, usageError{err}
	}
	if err := b.Start(); err != nil {
		_ = b.Close(context.Background())
		return nil, err
	}
	return b, nil
}
