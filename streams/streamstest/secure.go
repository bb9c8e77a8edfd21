package streamstest

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/pushd/pushd/regiontls"
)

// A server as a region runs it: TLS only, and ACL users.

// TLSFiles are what TLS serves with.
type TLSFiles struct {
	// CertFile and KeyFile are the server's certificate and key.
	CertFile, KeyFile string
	// CAFile holds the CA certificates clients must present a
	// certificate of (tls-auth-clients yes).
	CAFile string
	// Client is how the test's own connections (the start's PING,
	// Client) handshake: it trusts the server's certificate and presents
	// one of CAFile.
	Client *tls.Config
}

// TLS serves TLS only, on the server's one port, and asks every client
// for a certificate of f.CAFile.
func TLS(f TLSFiles) Option { return func(o *options) { o.tls = &f } }

// ACL loads the ACL file aclFile and has the test's own connections log
// in as user with password.
func ACL(aclFile, user, password string) Option {
	return func(o *options) { o.acl = &aclLogin{file: aclFile, user: user, password: password} }
}

type aclLogin struct{ file, user, password string }

// PushdACL writes the ACL file systemd/redis-pushd.acl ships (Redis's
// default user off, pushd's user on pushd's keys) for password into dir,
// and returns its path.
func PushdACL(t testing.TB, dir, password string) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	tmpl, err := os.ReadFile(filepath.Join(filepath.Dir(here), "..", "..", "systemd", "redis-pushd.acl"))
	if err != nil {
		t.Fatalf("streamstest: the shipped ACL: %v", err)
	}
	sum := sha256.Sum256([]byte(password))
	path := filepath.Join(dir, "users.acl")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(tmpl), "PUSHD_PASSWORD_SHA256", hex.EncodeToString(sum[:]))), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ServiceTLS makes TLSFiles in dir from ca: a service certificate for
// 127.0.0.1 for the server, ca as the client CA, and client, a node
// certificate of ca, for the test's own connections.
func ServiceTLS(t testing.TB, dir string, ca *regiontls.CA) TLSFiles {
	t.Helper()
	key, err := regiontls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := regiontls.NewCSR(key, "redis", regiontls.ParseNames([]string{"127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.Issue(csr, regiontls.KindService, 0)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := regiontls.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := TLSFiles{CertFile: filepath.Join(dir, "redis.crt"), KeyFile: filepath.Join(dir, "redis.key"), CAFile: filepath.Join(dir, "ca.crt")}
	for path, b := range map[string][]byte{f.CertFile: certPEM, f.KeyFile: keyPEM, f.CAFile: ca.CertPEM()} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	clientDir := filepath.Join(dir, "client")
	if err := ca.IssueNode(clientDir, "streamstest", regiontls.ParseNames([]string{"127.0.0.1"}), 0); err != nil {
		t.Fatal(err)
	}
	client, err := regiontls.Load(clientDir, "streamstest")
	if err != nil {
		t.Fatal(err)
	}
	f.Client = &tls.Config{RootCAs: client.Roots(), GetClientCertificate: client.ClientCertificate, MinVersion: tls.VersionTLS12}
	return f
}
