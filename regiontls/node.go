package regiontls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The files of a node's TLS directory.
const (
	// BundleFile is the trust bundle: the region's CA certificates.
	BundleFile = "ca.crt"
	// NodeFile is the node's private key followed by its certificate.
	NodeFile = "node.pem"
	// CAKeyFile is the CA key, on the nodes that issue certificates.
	CAKeyFile = "ca.key"
)

// Node is one node's TLS material, loaded from its directory, and the TLS
// configurations made from it. Reload and Install replace the material
// for every handshake that starts afterwards.
type Node struct {
	dir, id string
	mu      sync.Mutex // serializes Reload and Install
	cur     atomic.Pointer[material]
}

// material is one consistent load of a node's directory.
type material struct {
	cert   tls.Certificate // key and chain; Leaf is set
	roots  *x509.CertPool
	bundle []byte
	ca     *CA // nil where the CA key is not kept
}

// Load reads dir's bundle, node key and certificate, and the CA key when
// dir has one. The certificate must be a node certificate for id that
// chains to the bundle and is valid now; a CA key must belong to a
// certificate of the bundle.
func Load(dir, id string) (*Node, error) {
	n := &Node{dir: dir, id: id}
	m, err := n.read(nil)
	if err != nil {
		return nil, err
	}
	n.cur.Store(m)
	return n, nil
}

// Init checks a node's first material, as a node that joins receives it
// (the bundle, and its key and certificate as NodeFile holds them),
// writes it into dir and loads it. Nothing is written when a check fails.
func Init(dir, id string, bundlePEM, nodePEM []byte) (*Node, error) {
	if _, err := Check(bundlePEM, nodePEM, id); err != nil {
		return nil, err
	}
	if err := WriteFile(dir, BundleFile, bundlePEM, 0o644); err != nil {
		return nil, err
	}
	if err := WriteFile(dir, NodeFile, nodePEM, 0o600); err != nil {
		return nil, err
	}
	return Load(dir, id)
}

// Check reports whether nodePEM (a private key and a certificate) is a
// node certificate for id, valid now, that chains to bundlePEM and
// matches its key, and returns the certificate.
func Check(bundlePEM, nodePEM []byte, id string) (*x509.Certificate, error) {
	_, roots, err := ParseBundle(bundlePEM)
	if err != nil {
		return nil, err
	}
	cert, err := checkNode(nodePEM, roots, id)
	if err != nil {
		return nil, err
	}
	return cert.Leaf, nil
}

// checkNode parses a node's key and certificate and checks them against
// roots and id.
func checkNode(nodePEM []byte, roots *x509.CertPool, id string) (tls.Certificate, error) {
	// X509KeyPair takes the certificates and the key from one input.
	cert, err := tls.X509KeyPair(nodePEM, nodePEM)
	if err != nil {
		return cert, fmt.Errorf("node key and certificate: %v: %w", err, ErrInvalid)
	}
	leaf := cert.Leaf
	got, ok := NodeID(leaf)
	switch {
	case !ok:
		return cert, fmt.Errorf("certificate %q is not a pushd node certificate (no %s<id> name): %w", leaf.Subject.CommonName, nodeURIPrefix, ErrInvalid)
	case got != id:
		return cert, fmt.Errorf("certificate is for node %q, not %q: %w", got, id, ErrInvalid)
	case !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth):
		return cert, fmt.Errorf("node certificate %q is not for both server and client authentication: %w", got, ErrInvalid)
	}
	intermediates := x509.NewCertPool()
	for _, c := range cert.Certificate[1:] {
		if ic, err := x509.ParseCertificate(c); err == nil {
			intermediates.AddCert(ic)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return cert, fmt.Errorf("node certificate %q: %v: %w", got, err, ErrInvalid)
	}
	return cert, nil
}

// read loads the directory; nodePEM, when not nil, stands for NodeFile's
// content (Install checks what it is about to write).
func (n *Node) read(nodePEM []byte) (*material, error) {
	bundle, err := readFile(n.dir, BundleFile)
	if err != nil {
		return nil, err
	}
	_, roots, err := ParseBundle(bundle)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(n.dir, BundleFile), err)
	}
	path := filepath.Join(n.dir, NodeFile)
	if nodePEM == nil {
		if nodePEM, err = readFile(n.dir, NodeFile); err != nil {
			return nil, err
		}
	}
	cert, err := checkNode(nodePEM, roots, n.id)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m := &material{cert: cert, roots: roots, bundle: bundle}
	keyPEM, err := readFile(n.dir, CAKeyFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if m.ca, err = ParseCA(bundle, keyPEM, time.Now()); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(n.dir, CAKeyFile), err)
		}
	}
	return m, nil
}

// Reload reads the directory again, after an operator replaced files in
// it (a certificate issued elsewhere, a bundle with a second CA). On an
// error the material in use stays.
func (n *Node) Reload() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	m, err := n.read(nil)
	if err != nil {
		return err
	}
	n.cur.Store(m)
	return nil
}

// Install replaces the node's key and certificate with nodePEM (key, then
// certificate), once it has checked them as Load does: the file is
// written, then new handshakes use it. On an error nothing changes.
func (n *Node) Install(nodePEM []byte) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	m, err := n.read(nodePEM)
	if err != nil {
		return err
	}
	if err := WriteFile(n.dir, NodeFile, nodePEM, 0o600); err != nil {
		return err
	}
	n.cur.Store(m)
	return nil
}

// ID is the node id.
func (n *Node) ID() string { return n.id }

// Dir is the directory the material is kept in.
func (n *Node) Dir() string { return n.dir }

// Certificate is the node's certificate in use.
func (n *Node) Certificate() *x509.Certificate { return n.cur.Load().cert.Leaf }

// Names are the host names and addresses of the certificate in use.
func (n *Node) Names() Names { return namesOf(n.Certificate()) }

// Bundle is the trust bundle in use, PEM encoded.
func (n *Node) Bundle() []byte { return n.cur.Load().bundle }

// Roots is the trust bundle in use.
func (n *Node) Roots() *x509.CertPool { return n.cur.Load().roots }

// CA is the region CA when this node keeps its key, else nil.
func (n *Node) CA() *CA { return n.cur.Load().ca }

// ClientCertificate presents the node's certificate in use to a server
// that asks for one (tls.Config.GetClientCertificate).
func (n *Node) ClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return &n.cur.Load().cert, nil
}

// ServerConfig is for a port only nodes may use (Raft): the client must
// present a node certificate from the bundle.
func (n *Node) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := n.cur.Load()
			return &tls.Config{
				MinVersion:       tls.VersionTLS13,
				Certificates:     []tls.Certificate{m.cert},
				ClientAuth:       tls.RequireAndVerifyClientCert,
				ClientCAs:        m.roots,
				VerifyConnection: requireNode,
			}, nil
		},
	}
}

// HTTPServerConfig is for the admin API, which operators reach with a
// bearer token and no certificate: a client certificate is optional, but
// one that is given must be a node certificate from the bundle (PeerNode
// then names the node).
func (n *Node) HTTPServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := n.cur.Load()
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{m.cert},
				ClientAuth:   tls.VerifyClientCertIfGiven,
				ClientCAs:    m.roots,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 {
						return nil
					}
					return requireNode(cs)
				},
			}, nil
		},
	}
}

// ClientConfig is for dialing another node at addr (host:port): the
// server must present a node certificate from the bundle that names
// addr's host, and this node presents its own.
func (n *Node) ClientConfig(addr string) *tls.Config {
	m := n.cur.Load()
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		ServerName:       hostOf(addr),
		RootCAs:          m.roots,
		Certificates:     []tls.Certificate{m.cert},
		VerifyConnection: requireNode,
	}
}

// Transport is an HTTP transport for calling other nodes' HTTPS
// endpoints (the admin API) as this node: each new connection handshakes
// with ClientConfig, so a certificate installed meanwhile is presented
// from the next connection on.
func (n *Node) Transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := tls.Dialer{Config: n.ClientConfig(addr)}
		return d.DialContext(ctx, network, addr)
	}
	return tr
}

// requireNode refuses a handshake whose peer is not a node.
func requireNode(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the peer presented no certificate")
	}
	if _, ok := NodeID(cs.PeerCertificates[0]); !ok {
		return fmt.Errorf("the peer's certificate %q is not a pushd node certificate", cs.PeerCertificates[0].Subject.CommonName)
	}
	return nil
}

// PeerNode returns the node id of a TLS connection's verified peer
// certificate, or false when the peer presented none.
func PeerNode(cs *tls.ConnectionState) (string, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 {
		return "", false
	}
	return NodeID(cs.VerifiedChains[0][0])
}

// hostOf is addr's host, or addr when it has no port.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// readFile reads name from dir; a missing file's error says which.
func readFile(dir, name string) ([]byte, error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// WriteFile replaces dir/name with b atomically and durably: a temporary
// file, synced, renamed over it, and the directory synced, so a crash
// leaves the old file or the new one. dir is created with mode 0700.
// pushctl writes the certificates it fetches with it too.
func WriteFile(dir, name string, b []byte, perm os.FileMode) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(dir, name)
	f, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a failure; a renamed file is gone already
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
