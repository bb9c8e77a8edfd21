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
	if code != 0 || !strings.Contains(out.String(), "node bj-1") {
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
