package ctl

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/regiontls"
)

// TestConfig_CAFileRelativeToTheConfigFile: an https admin URL is
// reached with the CA the settings name, a ca_file in the config file
// being relative to it; without it the system's roots refuse the server,
// and a ca_file that holds no certificate is a usage error.
func TestConfig_CAFileRelativeToTheConfigFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"leader":"n1","nodes":[{"id":"n1","alive":true}],"degrade":{"active":false},"redis":"up"}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "junk.crt"), []byte("no certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	config := func(caFile string) string {
		p := filepath.Join(dir, "pushctl-"+strings.TrimSuffix(caFile, ".crt")+".json")
		b, _ := json.Marshal(map[string]string{"admin_url": srv.URL, "admin_token": "t", "ca_file": caFile})
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Run from elsewhere: the relative path is the config file's.
	if res := (harness{}).run(t, "status", "--config", config("ca.crt")); res.code != 0 || !strings.Contains(res.stdout, "n1") {
		t.Fatalf("with ca_file: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := (harness{}).run(t, "status", "--config", config("")); res.code != 1 || !strings.Contains(res.stderr, "certificate") {
		t.Fatalf("without ca_file: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if res := (harness{}).run(t, "status", "--config", config("junk.crt")); res.code != 2 || !strings.Contains(res.stderr, "no PEM certificate") {
		t.Fatalf("with a ca_file of no certificate: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	// The flag and the environment take a path as it is.
	env := harness{env: map[string]string{"PUSHD_ADMIN_URL": srv.URL, "PUSHD_ADMIN_TOKEN": "t", "PUSHD_CA_FILE": filepath.Join(dir, "ca.crt")}}
	if res := env.run(t, "status"); res.code != 0 {
		t.Fatalf("with $PUSHD_CA_FILE: exit %d\n%s", res.code, res.stderr)
	}
}

func TestTLSIssue_RefusesUsageMistakes(t *testing.T) {
	out := t.TempDir()
	if err := os.WriteFile(filepath.Join(out, "node.pem"), []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := harness{env: map[string]string{"PUSHD_ADMIN_URL": "https://127.0.0.1:1", "PUSHD_ADMIN_TOKEN": "t"}}
	for name, args := range map[string][]string{
		"both kinds":    {"--node", "n1", "--service", "redis", "--name", "10.0.0.1", "--out", t.TempDir()},
		"no kind":       {"--name", "10.0.0.1", "--out", t.TempDir()},
		"no name":       {"--node", "n1", "--out", t.TempDir()},
		"no out":        {"--node", "n1", "--name", "10.0.0.1"},
		"a file there":  {"--node", "n1", "--name", "10.0.0.1", "--out", out},
		"negative days": {"--node", "n1", "--name", "10.0.0.1", "--out", t.TempDir(), "--days", "-1"},
	} {
		if res := h.run(t, append([]string{"tls", "issue"}, args...)...); res.code != 2 {
			t.Errorf("%s: exit %d, want 2\n%s", name, res.code, res.stderr)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(out, "node.pem")); string(b) != "keep me" {
		t.Fatal("a refused issue overwrote a file")
	}
}

// TestTLS_IssueRotateAndListOnARegion: against a region whose admin API
// runs TLS, trusting its CA from the settings, pushctl issues a node's
// certificate (node.pem 0600 and ca.crt, which check out) and Redis's
// (its key 0600), rotates a node's, and lists them all.
func TestTLS_IssueRotateAndListOnARegion(t *testing.T) {
	r := appliancetest.StartRegion(t, 3, appliancetest.RegionOptions{TLS: true})
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, r.Raft.CA().CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	h := harness{env: map[string]string{"PUSHD_ADMIN_URL": r.Nodes[2].AdminURL, "PUSHD_ADMIN_TOKEN": r.Admin, "PUSHD_CA_FILE": caFile}}

	out := t.TempDir()
	if res := h.run(t, "tls", "issue", "--node", "bj-9", "--name", "10.0.0.9", "--name", "bj-9.internal", "--out", out); res.code != 0 ||
		!strings.Contains(res.stdout, "issued_by") {
		t.Fatalf("tls issue --node: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	nodePEM, _ := os.ReadFile(filepath.Join(out, regiontls.NodeFile))
	bundle, _ := os.ReadFile(filepath.Join(out, regiontls.BundleFile))
	cert, err := regiontls.Check(bundle, nodePEM, "bj-9")
	if err != nil || cert.DNSNames[0] != "bj-9.internal" || cert.IPAddresses[0].String() != "10.0.0.9" {
		t.Fatalf("the issued node certificate: %v", err)
	}
	if st, _ := os.Stat(filepath.Join(out, regiontls.NodeFile)); st.Mode().Perm() != 0o600 {
		t.Fatalf("node.pem mode %v", st.Mode().Perm())
	}

	svc := t.TempDir()
	if res := h.run(t, "tls", "issue", "--service", "redis", "--name", "10.0.0.5", "--out", svc, "-o", "json"); res.code != 0 {
		t.Fatalf("tls issue --service: exit %d\n%s", res.code, res.stderr)
	}
	for name, want := range map[string]os.FileMode{"redis.key": 0o600, "redis.crt": 0o644, "ca.crt": 0o644} {
		if st, err := os.Stat(filepath.Join(svc, name)); err != nil || st.Mode().Perm() != want {
			t.Fatalf("%s: %v", name, err)
		}
	}

	id := r.Raft.Member(1).ID
	before := regiontls.Serial(r.Raft.TLS(1).Certificate())
	res := h.run(t, "tls", "rotate", id)
	if res.code != 0 || !strings.Contains(res.stdout, "was "+before) {
		t.Fatalf("tls rotate: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	after := regiontls.Serial(r.Raft.TLS(1).Certificate())
	res = h.run(t, "tls", "list")
	rows := tableRows(res.stdout)
	if res.code != 0 || len(rows) != 4 || rows[0][0] != "NODE" || !strings.Contains(res.stdout, after) || strings.Contains(res.stdout, before) {
		t.Fatalf("tls list after the rotation (%s → %s): exit %d\n%s%s", before, after, res.code, res.stdout, res.stderr)
	}
}
