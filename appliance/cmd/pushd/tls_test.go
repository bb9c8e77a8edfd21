package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/regiontls"
)

// bootstrapOptions are the options of a region's first node in dir.
func bootstrapOptions(dir string) *options {
	return &options{NodeID: "bj-1", DataDir: dir, Bootstrap: true,
		RaftAddr: "10.0.0.1:8092", AdminAddr: ":8091", AdvertiseAdmin: "10.0.0.1:8091"}
}

func TestSetupRegionTLS_FirstNodeMakesTheCAAndKeepsIt(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	o := bootstrapOptions(t.TempDir())
	n, err := setupRegionTLS(context.Background(), o, log)
	if err != nil {
		t.Fatal(err)
	}
	if n.CA() == nil {
		t.Fatal("the first node does not keep the CA key")
	}
	if !n.Names().Covers(regiontls.ParseNames([]string{"10.0.0.1", "127.0.0.1", "localhost"})) {
		t.Fatalf("certificate names %v", n.Names().Strings())
	}
	for name, want := range map[string]os.FileMode{regiontls.CAKeyFile: 0o600, regiontls.NodeFile: 0o600} {
		st, err := os.Stat(filepath.Join(o.tlsDir(), name))
		if err != nil || st.Mode().Perm() != want {
			t.Fatalf("%s: %v, mode %v", name, err, st.Mode().Perm())
		}
	}
	if !strings.Contains(logs.String(), "made the region's CA") {
		t.Fatalf("no word of the new CA:\n%s", logs.String())
	}
	// Every later start loads the same material.
	serial := regiontls.Serial(n.Certificate())
	again, err := setupRegionTLS(context.Background(), o, log)
	if err != nil || regiontls.Serial(again.Certificate()) != serial {
		t.Fatalf("second start: %v", err)
	}

	// New addresses: the node that keeps the CA key certifies them.
	o.AdvertiseAdmin = "10.0.0.9:8091"
	moved, err := setupRegionTLS(context.Background(), o, log)
	if err != nil {
		t.Fatal(err)
	}
	if !moved.Names().Covers(regiontls.ParseNames([]string{"10.0.0.9"})) || regiontls.Serial(moved.Certificate()) == serial {
		t.Fatalf("after the address change the certificate names %v", moved.Names().Strings())
	}
}

// TestSetupRegionTLS_NamesAndExpiryWarnings: --tls-name goes into the
// certificate; a node without the CA key whose addresses its certificate
// does not name, or whose certificate expires within 30 days, says so at
// start and keeps running on it.
func TestSetupRegionTLS_NamesAndExpiryWarnings(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	o := bootstrapOptions(t.TempDir())
	o.TLSNames = []string{"push-bj-1.example.com", "192.0.2.7"}
	n, err := setupRegionTLS(context.Background(), o, log)
	if err != nil {
		t.Fatal(err)
	}
	if !n.Names().Covers(regiontls.ParseNames(o.TLSNames)) {
		t.Fatalf("--tls-name not in the certificate: %v", n.Names().Strings())
	}

	// Another node, without the CA key, its certificate valid ten days
	// and for 10.0.0.2 only.
	dir := t.TempDir()
	if err := n.CA().IssueNode(filepath.Join(dir, "tls"), "bj-2", regiontls.ParseNames([]string{"10.0.0.2"}), 10*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	other := &options{NodeID: "bj-2", DataDir: dir, RaftAddr: "10.0.0.3:8092"}
	got, err := setupRegionTLS(context.Background(), other, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"does not name every address", "pushctl tls rotate bj-2", "expires soon"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %q in the start's log:\n%s", want, logs.String())
		}
	}
	if got.Names().Covers(regiontls.ParseNames([]string{"10.0.0.3"})) {
		t.Fatal("a node without the CA key changed its certificate")
	}
}

func TestSetupRegionTLS_TheOperatorsCA(t *testing.T) {
	ca, err := regiontls.NewCA("operator CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := regiontls.NewCA("another CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	files := t.TempDir()
	write := func(name string, b []byte, mode os.FileMode) string {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyPEM, _ := ca.KeyPEM()
	otherKey, _ := other.KeyPEM()
	caFile := write("ca.crt", ca.CertPEM(), 0o644)
	log := slog.New(slog.DiscardHandler)

	// Bad input changes nothing: no file in the data dir.
	for name, set := range map[string]func(o *options){
		"a key of another CA":   func(o *options) { o.RegionCA, o.RegionCAKey = caFile, write("other.key", otherKey, 0o600) },
		"a key others may read": func(o *options) { o.RegionCA, o.RegionCAKey = caFile, write("open.key", keyPEM, 0o644) },
		"a certificate, no key": func(o *options) { o.RegionCA = caFile },
		"a CA that is not a CA": func(o *options) {
			o.RegionCA, o.RegionCAKey = write("leaf.crt", []byte("junk"), 0o644), write("ok.key", keyPEM, 0o600)
		},
	} {
		o := bootstrapOptions(t.TempDir())
		set(o)
		if _, err := setupRegionTLS(context.Background(), o, log); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := os.Stat(filepath.Join(o.tlsDir(), regiontls.NodeFile)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: a node certificate was written: %v", name, err)
		}
	}

	o := bootstrapOptions(t.TempDir())
	o.RegionCA, o.RegionCAKey = caFile, write("ca.key", keyPEM, 0o600)
	n, err := setupRegionTLS(context.Background(), o, log)
	if err != nil {
		t.Fatal(err)
	}
	if n.CA() == nil || !n.CA().Cert.Equal(ca.Cert) || n.Certificate().CheckSignatureFrom(ca.Cert) != nil {
		t.Fatal("the node's certificate is not of the operator's CA")
	}
}

func TestSetupRegionTLS_ANodeWithNoWayToACertificate(t *testing.T) {
	o := &options{NodeID: "bj-2", DataDir: t.TempDir(), RaftAddr: "10.0.0.2:8092"}
	_, err := setupRegionTLS(context.Background(), o, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "no node certificate in") || !strings.Contains(err.Error(), "--join") {
		t.Fatalf("setupRegionTLS without bootstrap, join or a certificate: %v", err)
	}
}

// TestRedisACL_IsTheShippedOne: the dev region's Redis ACL is the one
// systemd/redis-pushd.acl ships, so --dev-tls runs pushd under the same
// rights as a region does.
func TestRedisACL_IsTheShippedOne(t *testing.T) {
	tmpl, err := os.ReadFile("../../../systemd/redis-pushd.acl")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("pw"))
	hash := hex.EncodeToString(sum[:])
	if got, want := redisACL(hash), strings.ReplaceAll(string(tmpl), "PUSHD_PASSWORD_SHA256", hash); got != want {
		t.Fatalf("redisACL:\n%s\nsystemd/redis-pushd.acl:\n%s", got, want)
	}
}
