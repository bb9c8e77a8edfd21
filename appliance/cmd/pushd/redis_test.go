package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushd/pushd/regiontls"
	"github.com/pushd/pushd/streams/streamstest"
)

// TestRedisTLS_TrustsTheRegionBundleAsReloaded: the middle of a CA
// rotation. Redis already serves a certificate of the new CA while the
// node's bundle holds the old one only: the node refuses it. Once the new
// CA is appended to the bundle and the node reloads it (SIGHUP), the same
// Redis client's next connection trusts Redis, without a restart.
func TestRedisTLS_TrustsTheRegionBundleAsReloaded(t *testing.T) {
	oldCA, err := regiontls.NewCA("old region CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := regiontls.NewCA("new region CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	nodeDir := t.TempDir()
	if err := oldCA.IssueNode(nodeDir, "n1", regiontls.ParseNames([]string{"127.0.0.1"}), 0); err != nil {
		t.Fatal(err)
	}
	rt, err := regiontls.Load(nodeDir, "n1")
	if err != nil {
		t.Fatal(err)
	}

	// Redis: a certificate of the new CA; clients' certificates of
	// either CA.
	redisDir := t.TempDir()
	files := streamstest.TLSFiles{CertFile: filepath.Join(redisDir, "redis.crt"), KeyFile: filepath.Join(redisDir, "redis.key"),
		CAFile: filepath.Join(redisDir, "clients.crt")}
	certPEM, keyPEM := serviceCertificate(t, newCA, "redis")
	for path, b := range map[string][]byte{files.CertFile: certPEM, files.KeyFile: keyPEM,
		files.CAFile: append(oldCA.CertPEM(), newCA.CertPEM()...)} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	trustNew := x509.NewCertPool()
	trustNew.AddCert(newCA.Cert)
	files.Client = &tls.Config{RootCAs: trustNew, GetClientCertificate: rt.ClientCertificate, MinVersion: tls.VersionTLS12}
	srv := streamstest.StartRedis(t, streamstest.TLS(files))

	ro, err := (&options{Redis: srv.URL()}).redisOptions(rt)
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := newRedisClient(ro)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	if err := checkRedis(ctx, rdb, ro, log); err == nil || !strings.Contains(err.Error(), "its TLS certificate is not trusted") {
		t.Fatalf("Redis with a certificate of a CA the bundle lacks: %v, want it not trusted", err)
	}

	bundle := append(oldCA.CertPEM(), newCA.CertPEM()...)
	if err := os.WriteFile(filepath.Join(nodeDir, regiontls.BundleFile), bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := rt.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := checkRedis(ctx, rdb, ro, log); err != nil {
		t.Fatalf("after the bundle took the new CA: %v", err)
	}
	if err := rdb.Set(ctx, "pushd:k", "v", 0).Err(); err != nil {
		t.Fatalf("a write after the bundle took the new CA: %v", err)
	}

	// The name is checked still: Redis's certificate names 127.0.0.1,
	// not localhost.
	byName, err := (&options{Redis: strings.Replace(srv.URL(), "127.0.0.1", "localhost", 1)}).redisOptions(rt)
	if err != nil {
		t.Fatal(err)
	}
	other, err := newRedisClient(byName)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := checkRedis(ctx, other, byName, log); err == nil || !strings.Contains(err.Error(), "its TLS certificate is not trusted") || !strings.Contains(err.Error(), "match localhost") {
		t.Fatalf("Redis reached by a name its certificate lacks: %v", err)
	}
}

// serviceCertificate is a service certificate of ca for 127.0.0.1 and
// its key, PEM encoded.
func serviceCertificate(t *testing.T, ca *regiontls.CA, name string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := regiontls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := regiontls.NewCSR(key, name, regiontls.ParseNames([]string{"127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	if certPEM, _, err = ca.Issue(csr, regiontls.KindService, 0); err != nil {
		t.Fatal(err)
	}
	if keyPEM, err = regiontls.EncodeKey(key); err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}
