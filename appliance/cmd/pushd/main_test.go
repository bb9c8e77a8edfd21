package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckConfig_ShippedConfigIsValid(t *testing.T) {
	var out, errOut bytes.Buffer
	code := runCLI([]string{"pushd", "--config", "../../../systemd/pushd.json", "--check-config"}, &out, &errOut)
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
	cases := map[string][]string{
		"unknown key":        {"--config", write(`{"ws_addr": ":1"}`)},
		"bad duration":       {"--config", write(`{"heartbeat": "soon"}`)},
		"not json":           {"--config", write(`{`)},
		"missing file":       {"--config", filepath.Join(dir, "nope.json")},
		"join without token": {"--join", "10.0.0.1:8091"},
		"join with dev":      {"--join", "10.0.0.1:8091", "--join-token", "t", "--dev"},
		"zero connect rate":  {"--connect-rate", "0"},
		"tls half":           {"--tls-cert", "c.pem"},
		"weight":             {"--weight", "5000"},
		"log format":         {"--log-format", "xml"},
		"region all":         {"--region", "all"},
		"region not an id":   {"--region", "bei jing"},
		"peers, no brokers":  {"--bridge-peers", "sh"},
		"brokers, no peers":  {"--bridge-brokers", "k:9092"},
		"peer is this one":   {"--region", "bj", "--bridge-brokers", "k:9092", "--bridge-peers", "sh,bj"},
		"broker not h:p":     {"--bridge-brokers", "kafka", "--bridge-peers", "sh"},
		"topic bad":          {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-topic", "pushd/{region}"},
		"sasl unknown":       {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-sasl", "md5"},
		"sasl no password":   {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-sasl", "scram-sha-512", "--bridge-sasl-user", "u"},
		"sasl no mechanism":  {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-sasl-user", "u"},
		"tls key half":       {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-tls-cert", "c.pem"},
		"tls ca missing":     {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-tls-ca", filepath.Join(dir, "nope.pem")},
		"buffer negative":    {"--bridge-brokers", "k:9092", "--bridge-peers", "sh", "--bridge-buffer-records", "-1"},
		"dev kafka, no dev":  {"--dev-kafka", "127.0.0.1:9092", "--bridge-peers", "sh"},
		"dev kafka exposed":  {"--dev", "--dev-kafka", "0.0.0.0:9092", "--bridge-peers", "sh"},
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
	code := runCLI([]string{"pushd", "--config", "../../../systemd/pushd.json", "--node-id", "sh-3", "--check-config"}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "node sh-3") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}
