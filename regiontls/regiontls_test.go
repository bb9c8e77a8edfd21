package regiontls

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// loopback is what test certificates name.
var loopback = ParseNames([]string{"127.0.0.1", "localhost"})

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test region", 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// newNode writes a CA-less node directory for id with a certificate from
// ca and loads it.
func newNode(t *testing.T, ca *CA, id string, names Names) *Node {
	t.Helper()
	dir := t.TempDir()
	if err := ca.IssueNode(dir, id, names, 0); err != nil {
		t.Fatal(err)
	}
	n, err := Load(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// issueParts returns a new key and a certificate of kind for cn, PEM.
func issueParts(t *testing.T, ca *CA, kind Kind, cn string, names Names) (keyPEM, certPEM []byte) {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key, cn, names)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err = ca.Issue(csr, kind, 0)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ = EncodeKey(key)
	return keyPEM, certPEM
}

// issue returns a key and certificate in NodeFile's form.
func issue(t *testing.T, ca *CA, kind Kind, cn string, names Names) []byte {
	t.Helper()
	k, c := issueParts(t, ca, kind, cn, names)
	return append(k, c...)
}

// pair is issue as a tls.Certificate.
func pair(t *testing.T, ca *CA, kind Kind, cn string) tls.Certificate {
	t.Helper()
	b := issue(t, ca, kind, cn, loopback)
	c, err := tls.X509KeyPair(b, b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// serve accepts one connection on a loopback listener with cfg, completes
// its handshake and reports the handshake's outcome.
func serve(t *testing.T, cfg *tls.Config) (addr string, result <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, cfg)
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		err = tc.Handshake()
		if err == nil {
			// A TLS 1.3 client learns of a refused certificate on its
			// first read: answer one byte.
			_, err = tc.Write([]byte{1})
		}
		ch <- err
	}()
	return ln.Addr().String(), ch
}

// dial handshakes with addr using cfg and reads the server's byte.
func dial(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err
}

func TestNode_MutualTLSBetweenNodes(t *testing.T) {
	ca := newCA(t)
	a, b := newNode(t, ca, "n1", loopback), newNode(t, ca, "n2", loopback)
	if id, ok := NodeID(a.Certificate()); !ok || id != "n1" {
		t.Fatalf("NodeID = %q, %v", id, ok)
	}
	addr, srv := serve(t, a.ServerConfig())
	if err := dial(addr, b.ClientConfig(addr)); err != nil {
		t.Fatalf("client: %v", err)
	}
	if err := <-srv; err != nil {
		t.Fatalf("server: %v", err)
	}
}

func TestNode_RefusesPeersWithoutARegionNodeCertificate(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	server := newNode(t, ca, "n1", loopback)
	stranger := newNode(t, other, "n2", loopback)

	svc := pair(t, ca, KindService, "redis")
	roots := server.Roots()

	cases := map[string]*tls.Config{
		"no certificate":        {ServerName: "127.0.0.1", RootCAs: roots, MinVersion: tls.VersionTLS13},
		"another CA's node":     stranger.ClientConfig("127.0.0.1:1"),
		"the region's service":  {ServerName: "127.0.0.1", RootCAs: roots, Certificates: []tls.Certificate{svc}},
		"expired node (region)": {ServerName: "127.0.0.1", RootCAs: roots, Certificates: []tls.Certificate{expiredNode(t, ca, "n3")}},
	}
	// The stranger does not trust the region's server either; let it
	// skip that check so the server's refusal is what is tested.
	cases["another CA's node"].InsecureSkipVerify = true
	cases["another CA's node"].VerifyConnection = nil
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			addr, srv := serve(t, server.ServerConfig())
			if err := dial(addr, cfg); err == nil {
				t.Fatal("the client got through")
			}
			if err := <-srv; err == nil {
				t.Fatal("the server completed the handshake")
			}
		})
	}
}

// expiredNode is a node certificate from ca that expired an hour ago.
func expiredNode(t *testing.T, ca *CA, id string) tls.Certificate {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(), Subject: pkix.Name{CommonName: id},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: loopback.IPs, DNSNames: loopback.DNS,
		URIs: []*url.URL{{Scheme: "urn", Opaque: "pushd:node:" + id}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// mismatched is one issue's key with another's certificate.
func mismatched(t *testing.T, ca *CA, id string) []byte {
	t.Helper()
	k, _ := issueParts(t, ca, KindNode, id, loopback)
	_, c := issueParts(t, ca, KindNode, id, loopback)
	return append(k, c...)
}

func TestNode_ClientChecksTheServerName(t *testing.T) {
	ca := newCA(t)
	server := newNode(t, ca, "n1", ParseNames([]string{"10.9.9.9"}))
	client := newNode(t, ca, "n2", loopback)
	addr, srv := serve(t, server.ServerConfig())
	err := dial(addr, client.ClientConfig(addr))
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("dial a node whose certificate does not name 127.0.0.1: %v", err)
	}
	<-srv
}

func TestNode_HTTPServerTakesNoCertificateOrANodeOne(t *testing.T) {
	ca := newCA(t)
	server, client := newNode(t, ca, "n1", loopback), newNode(t, ca, "n2", loopback)
	roots := server.Roots()

	addr, srv := serve(t, server.HTTPServerConfig())
	if err := dial(addr, &tls.Config{ServerName: "127.0.0.1", RootCAs: roots}); err != nil {
		t.Fatalf("without a certificate: %v", err)
	}
	if err := <-srv; err != nil {
		t.Fatal(err)
	}

	addr, srv = serve(t, server.HTTPServerConfig())
	if err := dial(addr, client.ClientConfig(addr)); err != nil {
		t.Fatalf("as a node: %v", err)
	}
	if err := <-srv; err != nil {
		t.Fatal(err)
	}

	svc := pair(t, ca, KindService, "redis")
	addr, srv = serve(t, server.HTTPServerConfig())
	if err := dial(addr, &tls.Config{ServerName: "127.0.0.1", RootCAs: roots, Certificates: []tls.Certificate{svc}}); err == nil {
		t.Fatal("a service certificate got through as a client")
	}
	if err := <-srv; err == nil || !strings.Contains(err.Error(), "not a pushd node certificate") {
		t.Fatalf("server: %v", err)
	}
}

func TestNode_InstallRotatesForNewConnectionsAndRefusesBadMaterial(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	n := newNode(t, ca, "n1", loopback)
	peer := newNode(t, ca, "n2", loopback)
	before, err := os.ReadFile(filepath.Join(n.Dir(), NodeFile))
	if err != nil {
		t.Fatal(err)
	}
	oldSerial := Serial(n.Certificate())

	for name, pem := range map[string][]byte{
		"another node's":     issue(t, ca, KindNode, "n9", loopback),
		"another CA's":       issue(t, other, KindNode, "n1", loopback),
		"a service's":        issue(t, ca, KindService, "n1", loopback),
		"a mismatched key's": mismatched(t, ca, "n1"),
		"garbage":            []byte("not pem"),
	} {
		if err := n.Install(pem); !errors.Is(err, ErrInvalid) {
			t.Errorf("install %s certificate: %v, want ErrInvalid", name, err)
		}
	}
	after, _ := os.ReadFile(filepath.Join(n.Dir(), NodeFile))
	if !bytes.Equal(before, after) || Serial(n.Certificate()) != oldSerial {
		t.Fatal("a refused install changed the node's material")
	}

	// A connection opened before the rotation keeps working after it.
	addr, srv := serve(t, n.ServerConfig())
	conn, err := tls.Dial("tcp", addr, peer.ClientConfig(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := n.Install(issue(t, ca, KindNode, "n1", loopback)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the connection opened before the rotation: %v", err)
	}
	if err := <-srv; err != nil {
		t.Fatal(err)
	}
	if Serial(n.Certificate()) == oldSerial {
		t.Fatal("install did not change the certificate")
	}
	addr, srv = serve(t, n.ServerConfig())
	c2, err := tls.Dial("tcp", addr, peer.ClientConfig(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got := Serial(c2.ConnectionState().PeerCertificates[0]); got != Serial(n.Certificate()) {
		t.Fatalf("a new connection got serial %s, want the new %s", got, Serial(n.Certificate()))
	}
	<-srv
	if st, _ := os.Stat(filepath.Join(n.Dir(), NodeFile)); st.Mode().Perm() != 0o600 {
		t.Fatalf("node.pem mode %v, want 0600", st.Mode().Perm())
	}
	reloaded, err := Load(n.Dir(), "n1")
	if err != nil || Serial(reloaded.Certificate()) != Serial(n.Certificate()) {
		t.Fatalf("load after install: %v", err)
	}
}

func TestNode_ReloadTakesASecondCAAndKeepsTheOldMaterialOnError(t *testing.T) {
	ca, next := newCA(t), newCA(t)
	n := newNode(t, ca, "n1", loopback)
	serial := Serial(n.Certificate())

	// A bundle without the CA of the node's certificate is refused.
	if err := WriteFile(n.Dir(), BundleFile, next.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.Reload(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("reload with a bundle that does not hold the node's CA: %v", err)
	}
	if Serial(n.Certificate()) != serial || !bytes.Equal(n.Bundle(), ca.CertPEM()) {
		t.Fatal("a failed reload changed the material in use")
	}

	// Both CAs: the node's certificate from the old, a peer's from the
	// new, and they talk.
	if err := WriteFile(n.Dir(), BundleFile, append(ca.CertPEM(), next.CertPEM()...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.Reload(); err != nil {
		t.Fatal(err)
	}
	peerDir := t.TempDir()
	if err := next.IssueNode(peerDir, "n2", loopback, 0); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(peerDir, BundleFile, append(ca.CertPEM(), next.CertPEM()...), 0o644); err != nil {
		t.Fatal(err)
	}
	peer, err := Load(peerDir, "n2")
	if err != nil {
		t.Fatal(err)
	}
	addr, srv := serve(t, n.ServerConfig())
	if err := dial(addr, peer.ClientConfig(addr)); err != nil {
		t.Fatalf("a node of the new CA dialing one of the old: %v", err)
	}
	if err := <-srv; err != nil {
		t.Fatal(err)
	}
	if err := n.Install(issue(t, next, KindNode, "n1", loopback)); err != nil {
		t.Fatalf("install a certificate of the second CA: %v", err)
	}
}

func TestLoad_ExplainsWhatIsWrong(t *testing.T) {
	ca := newCA(t)
	cases := map[string]struct {
		setup func(dir string)
		want  string
	}{
		"no bundle": {func(dir string) {}, "ca.crt"},
		"no node file": {func(dir string) {
			_ = WriteFile(dir, BundleFile, ca.CertPEM(), 0o644)
		}, "node.pem"},
		"another node's certificate": {func(dir string) {
			_ = ca.IssueNode(dir, "other", loopback, 0)
		}, `for node "other", not "n1"`},
		"expired": {func(dir string) {
			c := expiredNode(t, ca, "n1")
			key, _ := EncodeKey(c.PrivateKey.(crypto.Signer))
			_ = WriteFile(dir, BundleFile, ca.CertPEM(), 0o644)
			_ = WriteFile(dir, NodeFile, append(key, encodeCert(c.Leaf)...), 0o600)
		}, "expired"},
		"a CA key of another CA": {func(dir string) {
			_ = ca.IssueNode(dir, "n1", loopback, 0)
			k, _ := newCA(t).KeyPEM()
			_ = WriteFile(dir, CAKeyFile, k, 0o600)
		}, "ca.key"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			c.setup(dir)
			if _, err := Load(dir, "n1"); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load: %v, want an error naming %q", err, c.want)
			}
		})
	}
}

func TestCA_IssueRefusesWhatItShouldNotSign(t *testing.T) {
	ca := newCA(t)
	key, _ := NewKey()
	csr := func(cn string, names Names) []byte {
		b, err := NewCSR(key, cn, names)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withURI, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "n1"}, IPAddresses: loopback.IPs,
		URIs: []*url.URL{{Scheme: "urn", Opaque: "pushd:node:someone-else"}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	tampered := csr("n1", loopback)
	tampered[len(tampered)/2] ^= 1
	cases := map[string]struct {
		csr      []byte
		kind     Kind
		validity time.Duration
	}{
		"no names":         {csr("n1", Names{}), KindNode, 0},
		"a wildcard":       {csr("n1", Names{DNS: []string{"*.example.com"}}), KindNode, 0},
		"a bad node id":    {csr("n 1", loopback), KindNode, 0},
		"a URI name":       {pemBlock("CERTIFICATE REQUEST", withURI), KindNode, 0},
		"a bad signature":  {tampered, KindNode, 0},
		"an unknown kind":  {csr("n1", loopback), "client", 0},
		"too long a life":  {csr("n1", loopback), KindNode, MaxValidity + time.Hour},
		"not a request":    {ca.CertPEM(), KindNode, 0},
		"an empty service": {csr("", loopback), KindService, 0},
		"too many names":   {csr("n1", ParseNames(hostNames(maxNames+1))), KindNode, 0},
		"a negative life":  {csr("n1", loopback), KindNode, -time.Hour},
		"a bad host name":  {csr("n1", Names{DNS: []string{"under_score.example"}}), KindService, 0},
	}
	for name, c := range cases {
		if _, _, err := ca.Issue(c.csr, c.kind, c.validity); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}

	// What it signs: the names asked for, the node's URI for a node,
	// never beyond the CA's own life.
	_, cert, err := ca.Issue(csr("n1", ParseNames([]string{"10.0.0.1", "bj-1.internal"})), KindNode, MaxValidity)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := NodeID(cert); !ok || id != "n1" || cert.DNSNames[0] != "bj-1.internal" || !cert.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Fatalf("issued %v %v %v", cert.URIs, cert.DNSNames, cert.IPAddresses)
	}
	if cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatalf("certificate outlives its CA: %s > %s", cert.NotAfter, ca.Cert.NotAfter)
	}
	_, svc, err := ca.Issue(csr("redis", loopback), KindService, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := NodeID(svc); ok {
		t.Fatal("a service certificate names a node")
	}
	if d := time.Until(svc.NotAfter); d < DefaultValidity-time.Hour || d > DefaultValidity {
		t.Fatalf("default validity %s", d)
	}
}

// hostNames returns k distinct host names.
func hostNames(k int) []string {
	var out []string
	for i := range k {
		out = append(out, fmt.Sprintf("h%d.example", i))
	}
	return out
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestParseCA_RefusesWhatIsNotAUsableCA(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	key, _ := ca.KeyPEM()
	otherKey, _ := other.KeyPEM()
	leafKey, leaf := issueParts(t, ca, KindService, "redis", loopback)
	if _, err := ParseCA(ca.CertPEM(), key, time.Now()); err != nil {
		t.Fatalf("a good CA: %v", err)
	}
	cases := map[string]struct {
		cert, key []byte
		now       time.Time
		want      string
	}{
		"another CA's key": {ca.CertPEM(), otherKey, time.Now(), "not the key"},
		"a leaf":           {leaf, leafKey, time.Now(), "not a CA"},
		"expired":          {ca.CertPEM(), key, ca.Cert.NotAfter.Add(time.Hour), "expired"},
		"no key":           {ca.CertPEM(), []byte("nothing"), time.Now(), "no private key"},
		"no certificate":   {key, key, time.Now(), "no certificate"},
	}
	for name, c := range cases {
		if _, err := ParseCA(c.cert, c.key, c.now); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid saying %q", name, err, c.want)
		}
	}
}

func TestCA_SaveWritesTheKeyPrivately(t *testing.T) {
	ca := newCA(t)
	dir := filepath.Join(t.TempDir(), "tls")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{CAKeyFile: 0o600, BundleFile: 0o644, ".": 0o700} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v, mode %v, want %v", name, err, st.Mode().Perm(), want)
		}
	}
	if err := ca.IssueNode(dir, "n1", loopback, 0); err != nil {
		t.Fatal(err)
	}
	n, err := Load(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if n.CA() == nil || !n.CA().Cert.Equal(ca.Cert) {
		t.Fatal("a node with the CA key does not hold the CA")
	}
}
