package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shippedArgs check systemd/pushd.json with a password file standing in
// for the one install-redis.sh makes on a host.
func shippedArgs(t *testing.T) []string {
	pw := filepath.Join(t.TempDir(), "redis-password")
	if err := os.WriteFile(pw, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"pushd", "--config", "../../../systemd/pushd.json", "--redis-password-file", pw}
}

func TestCheckConfig_ShippedConfigIsValid(t *testing.T) {
	var out, errOut bytes.Buffer
	code := runCLI(append(shippedArgs(t), "--check-config"), &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "node bj-1 of region bj") ||
		!strings.Contains(out.String(), "bridge to sh through kafka-1.example.com:9093, kafka-2.example.com:9093, kafka-3.example.com:9093") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}

func TestCheckConfig_RefusesMistakes(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "c.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := func(mode os.FileMode) string {
		p := filepath.Join(dir, fmt.Sprintf("secret-%o", mode))
		if err := os.WriteFile(p, []byte("s3cret\n"), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := map[string][]string{
		"unknown key":                        {"--config", write(`{"ws_addr": ":1"}`)},
		"dev-tls outside dev":                {"--dev-tls"},
		"plaintext in dev":                   {"--dev", "--insecure-plaintext"},
		"plaintext with a CA":                {"--insecure-plaintext", "--region-ca", "ca.crt"},
		"CA key without bootstrap":           {"--region-ca", "ca.crt", "--region-ca-key", "ca.key"},
		"CA key without its certificate":     {"--bootstrap", "--region-ca-key", "ca.key"},
		"push tls half":                      {"--push-tls-key", "k.pem"},
		"push tls files missing":             {"--push-tls-cert", "nope.crt", "--push-tls-key", "nope.key"},
		"two join tokens":                    {"--join", "10.0.0.1:8091", "--join-token", "t", "--join-token-file", secret(0o600)},
		"join token file readable by all":    {"--join", "10.0.0.1:8091", "--join-token-file", secret(0o644)},
		"redis password file group-readable": {"--redis-password-file", secret(0o640)},
		"redis password in the URL and file": {"--redis", "redis://pushd:hunter2@10.0.0.5:6379/0", "--redis-password-file", secret(0o600)},
		"dev-tls with a push certificate":    {"--dev", "--dev-tls", "--push-tls-cert", "c", "--push-tls-key", "k"},
		"bad duration":                       {"--config", write(`{"heartbeat": "soon"}`)},
		"not json":                           {"--config", write(`{`)},
		"missing file":                       {"--config", filepath.Join(dir, "nope.json")},
		"join without token":                 {"--join", "10.0.0.1:8091"},
		"join with dev":                      {"--join", "10.0.0.1:8091", "--join-token", "t", "--dev"},
		"zero connect rate":                  {"--connect-rate", "0"},
		"tls half":                           {"--tls-cert", "c.pem"},
		"weight":                             {"--weight", "5000"},
		"log format":                         {"--log-format", "xml"},
		"drain timeout":                      {"--drain-timeout", "10s"},
		"drain spread":                       {"--drain-spread", "-1s"},
		"trace memory":                       {"--trace-memory", "lots"},
		"trace memory unit":                  {"--trace-memory", "64MB"},
		"trace ttl":                          {"--trace-ttl", "0s"},
		"file trace ttl":                     {"--config", write(`{"trace-ttl": "soon"}`)},
		"region all":                         {"--region", "all"},
		"region not an id":                   {"--region", "bei jing"},
		"peers, no brokers":                  {"--bridge-peers", "sh"},
		"brokers, no peers":                  {"--bridge-brokers", "k:9092"},
		"peer is this one":                   {"--region", "bj", "--bridge-brokers", "k:9092", "--bridge-peers", "sh,bj"},
		"broker not h:p":                     {"--bridge-brokers", "kafka", "--bridge-peers", "sh"},
		"topic bad":                          {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-topic", "pushd/{region}"},
		"sasl unknown":                       {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-sasl", "md5"},
		"sasl no password":                   {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-sasl", "scram-sha-512", "--bridge-sasl-user", "u"},
		"sasl no mechanism":                  {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-sasl-user", "u"},
		"tls key half":                       {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-tls-cert", "c.pem"},
		"tls ca missing":                     {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-tls-ca", filepath.Join(dir, "nope.pem")},
		"buffer negative":                    {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-buffer-records", "-1"},
		"dev kafka, no dev":                  {"--dev-kafka", "127.0.0.1:9092", "--bridge-peers", "sh"},
		"dev kafka exposed":                  {"--dev", "--dev-kafka", "0.0.0.0:9092", "--bridge-peers", "sh"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := runCLI(append(append([]string{"pushd"}, args...), "--check-config"), &out, &errOut); code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, errOut.String())
			}
			if !strings.Contains(errOut.String(), "pushd:") {
				t.Fatalf("no error message: %q", errOut.String())
			}
		})
	}
}

func TestCheckConfig_FlagsOverrideFile(t *testing.T) {
	var out, errOut bytes.Buffer
	code := runCLI(append(shippedArgs(t), "--node-id", "sh-3", "--check-config"), &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "node sh-3") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "4096": 4096, "512KiB": 512 << 10, "64MiB": 64 << 20, "1GiB": 1 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "64MB", "MiB", "1.5MiB", "2048GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

// TestCheckConfig_NodeSettings: the drain and trace settings reach the
// node's configuration; 0 turns tracing off and drains at once.
func TestCheckConfig_NodeSettings(t *testing.T) {
	var out, errOut bytes.Buffer
	code := runCLI([]string{"pushd", "--drain-spread", "2s", "--drain-timeout", "6s", "--trace-memory", "8MiB", "--trace-ttl", "1m", "--check-config"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	o := options{DrainSpread: 2 * time.Second, TraceMemory: "8MiB", TraceTTL: time.Minute}
	cfg, err := o.nodeConfig()
	if err != nil || cfg.DrainSpread != 2*time.Second || cfg.TraceMemory != 8<<20 || cfg.TraceTTL != time.Minute {
		t.Fatalf("config %+v, %v", cfg, err)
	}
	o = options{TraceMemory: "0"}
	if cfg, _ := o.nodeConfig(); cfg.TraceMemory >= 0 || cfg.DrainSpread <= 0 || cfg.DrainSpread > time.Millisecond {
		t.Fatalf("0 settings: trace memory %d, drain spread %s; want tracing off and drains at once", cfg.TraceMemory, cfg.DrainSpread)
	}
}
