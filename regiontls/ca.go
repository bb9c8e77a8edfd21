package regiontls

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

const (
	// DefaultCAValidity is how long a CA made by NewCA is valid.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultValidity is how long an issued certificate is valid when
	// the request names no validity: a year, so that rotating is a
	// yearly habit rather than a forgotten emergency.
	DefaultValidity = 365 * 24 * time.Hour
	// MaxValidity bounds what a request may ask for.
	MaxValidity = 5 * 365 * 24 * time.Hour
	// backdate starts every certificate a little in the past, so that a
	// peer whose clock is slightly behind the issuer's accepts it.
	backdate = 5 * time.Minute
	// maxNames bounds the DNS and IP names of one certificate.
	maxNames = 32
	// nodeURIPrefix starts the URI SAN that makes a certificate a node
	// certificate: urn:pushd:node:<id>.
	nodeURIPrefix = "urn:pushd:node:"
)

// ErrInvalid is returned for material or requests that are not what they
// should be: a file that holds no certificate, a key that does not match,
// a certificate that is expired or from another CA, a request the CA
// refuses. The wrapping error says which and why.
var ErrInvalid = errors.New("invalid TLS material")

// Kind is what an issued certificate is for.
type Kind string

const (
	// KindNode is a pushd node: its certificate names the node id (a URI
	// SAN) and is accepted by the other nodes' Raft and admin ports.
	KindNode Kind = "node"
	// KindService is another server of the region, such as Redis: the
	// nodes accept it as a server they dial, but never as a node.
	KindService Kind = "service"
)

// Valid reports whether k is a kind the CA issues.
func (k Kind) Valid() bool { return k == KindNode || k == KindService }

// validID matches node ids, as raftmeta accepts them.
var validID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// validDNS matches a host name: dot-separated labels of letters, digits
// and hyphens. Wildcards are refused: a region certificate names hosts.
var validDNS = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

// Names are the hosts a certificate is valid for.
type Names struct {
	DNS []string
	IPs []net.IP
}

// ParseNames sorts host names and IP addresses (either form, ports
// allowed and dropped, empty entries skipped) into Names, without
// duplicates.
func ParseNames(hosts []string) Names {
	var n Names
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(n.IPs, ip.Equal) {
				n.IPs = append(n.IPs, ip)
			}
		} else if !slices.Contains(n.DNS, h) {
			n.DNS = append(n.DNS, h)
		}
	}
	return n
}

// Strings lists the names, DNS names first.
func (n Names) Strings() []string {
	out := slices.Clone(n.DNS)
	for _, ip := range n.IPs {
		out = append(out, ip.String())
	}
	return out
}

// Empty reports whether there are no names.
func (n Names) Empty() bool { return len(n.DNS) == 0 && len(n.IPs) == 0 }

// Covers reports whether every name of o is in n.
func (n Names) Covers(o Names) bool {
	for _, d := range o.DNS {
		if !slices.ContainsFunc(n.DNS, func(x string) bool { return strings.EqualFold(x, d) }) {
			return false
		}
	}
	for _, ip := range o.IPs {
		if !slices.ContainsFunc(n.IPs, ip.Equal) {
			return false
		}
	}
	return true
}

func (n Names) check() error {
	if n.Empty() {
		return fmt.Errorf("no host names or addresses: %w", ErrInvalid)
	}
	if len(n.DNS)+len(n.IPs) > maxNames {
		return fmt.Errorf("%d names, more than %d: %w", len(n.DNS)+len(n.IPs), maxNames, ErrInvalid)
	}
	for _, d := range n.DNS {
		if len(d) > 253 || !validDNS.MatchString(d) {
			return fmt.Errorf("host name %q: %w", d, ErrInvalid)
		}
	}
	return nil
}

// namesOf returns a certificate's DNS and IP names.
func namesOf(c *x509.Certificate) Names { return Names{DNS: c.DNSNames, IPs: c.IPAddresses} }

// NodeID returns the node id a node certificate names (its
// urn:pushd:node: URI SAN), or false for any other certificate.
func NodeID(c *x509.Certificate) (string, bool) {
	for _, u := range c.URIs {
		if id, ok := strings.CutPrefix(u.String(), nodeURIPrefix); ok && validID.MatchString(id) {
			return id, true
		}
	}
	return "", false
}

// CA is a certificate authority that can issue: its certificate and key.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
}

// NewCA makes a CA: a new ECDSA P-256 key and a self-signed certificate
// named name, valid for validity (zero: DefaultCAValidity).
func NewCA(name string, validity time.Duration) (*CA, error) {
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// It signs leaf certificates only.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key}, nil
}

// ParseCA reads a CA certificate and its key, as Save writes them or as
// an operator brings them from another CA. The certificate must be a CA
// valid at now and the key must be its own.
func ParseCA(certPEM, keyPEM []byte, now time.Time) (*CA, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	for _, c := range certs {
		if publicKeysEqual(c.PublicKey, key.Public()) {
			if err := checkCA(c, now); err != nil {
				return nil, err
			}
			return &CA{Cert: c, key: key}, nil
		}
	}
	return nil, fmt.Errorf("the CA key is not the key of any certificate given with it: %w", ErrInvalid)
}

func checkCA(c *x509.Certificate, now time.Time) error {
	switch {
	case !c.IsCA || !c.BasicConstraintsValid:
		return fmt.Errorf("certificate %q is not a CA certificate: %w", c.Subject.CommonName, ErrInvalid)
	case c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("CA certificate %q may not sign certificates (key usage): %w", c.Subject.CommonName, ErrInvalid)
	case now.Before(c.NotBefore):
		return fmt.Errorf("CA certificate %q is not valid before %s: %w", c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339), ErrInvalid)
	case now.After(c.NotAfter):
		return fmt.Errorf("CA certificate %q expired on %s: %w", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339), ErrInvalid)
	}
	return nil
}

// CertPEM is the CA certificate, PEM encoded.
func (ca *CA) CertPEM() []byte { return encodeCert(ca.Cert) }

// KeyPEM is the CA key, PEM encoded (PKCS #8).
func (ca *CA) KeyPEM() ([]byte, error) { return EncodeKey(ca.key) }

// Issue signs a certificate request: of kind KindNode, its common name is
// the node id; either kind takes its DNS and IP names from the request,
// and nothing else (no URIs or e-mail addresses, which are refused).
// validity zero is DefaultValidity; a certificate never outlives the CA.
// It returns the certificate, PEM encoded.
func (ca *CA) Issue(csrPEM []byte, kind Kind, validity time.Duration) ([]byte, *x509.Certificate, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, nil, err
	}
	if !kind.Valid() {
		return nil, nil, fmt.Errorf("kind %q: want node or service: %w", kind, ErrInvalid)
	}
	if validity < 0 || validity > MaxValidity {
		return nil, nil, fmt.Errorf("validity %s: want up to %s: %w", validity, MaxValidity, ErrInvalid)
	}
	if validity == 0 {
		validity = DefaultValidity
	}
	names := Names{DNS: csr.DNSNames, IPs: csr.IPAddresses}
	if err := names.check(); err != nil {
		return nil, nil, err
	}
	if len(csr.URIs) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, nil, fmt.Errorf("the request holds URI or e-mail names; only host names and addresses are issued: %w", ErrInvalid)
	}
	cn := csr.Subject.CommonName
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		// The organizational unit keeps a leaf's name from ever equalling
		// the CA's (which has none): OpenSSL, Redis's TLS, takes a
		// certificate whose subject is its issuer's for self-signed.
		Subject:               pkix.Name{CommonName: cn, OrganizationalUnit: []string{"pushd " + string(kind)}},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              names.DNS,
		IPAddresses:           names.IPs,
	}
	switch kind {
	case KindNode:
		if !validID.MatchString(cn) {
			return nil, nil, fmt.Errorf("node id %q (the request's common name): want 1-64 letters, digits, '.', '_' or '-': %w", cn, ErrInvalid)
		}
		tmpl.URIs = []*url.URL{{Scheme: "urn", Opaque: strings.TrimPrefix(nodeURIPrefix, "urn:") + cn}}
	case KindService:
		if cn == "" || len(cn) > 64 {
			return nil, nil, fmt.Errorf("service name %q (the request's common name): want 1-64 characters: %w", cn, ErrInvalid)
		}
	}
	if _, ok := csr.PublicKey.(*rsa.PublicKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	now := time.Now()
	if now.After(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("the region CA expired on %s: %w", ca.Cert.NotAfter.UTC().Format(time.RFC3339), ErrInvalid)
	}
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(cert), cert, nil
}

// Save writes the CA into dir: its certificate as the trust bundle
// (ca.crt) and its key (ca.key, mode 0600). dir is created (mode 0700).
func (ca *CA) Save(dir string) error {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	if err := WriteFile(dir, CAKeyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return WriteFile(dir, BundleFile, ca.CertPEM(), 0o644)
}

// IssueNode gives node id in dir a new key and a certificate from ca for
// names (node.pem), and writes ca's certificate as the bundle unless dir
// has one. It is how a node holding the CA issues its own certificate.
func (ca *CA) IssueNode(dir, id string, names Names, validity time.Duration) error {
	key, err := NewKey()
	if err != nil {
		return err
	}
	csr, err := NewCSR(key, id, names)
	if err != nil {
		return err
	}
	certPEM, _, err := ca.Issue(csr, KindNode, validity)
	if err != nil {
		return err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return err
	}
	if _, err := readFile(dir, BundleFile); errors.Is(err, fs.ErrNotExist) {
		if err := WriteFile(dir, BundleFile, ca.CertPEM(), 0o644); err != nil {
			return err
		}
	}
	return WriteFile(dir, NodeFile, append(keyPEM, certPEM...), 0o600)
}

// NewKey makes an ECDSA P-256 key: small, and fast in handshakes.
func NewKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

// EncodeKey encodes a private key as PEM (PKCS #8).
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey reads a private key: PKCS #8, or the older EC and RSA forms.
func ParseKey(keyPEM []byte) (crypto.Signer, error) {
	for rest := keyPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("no private key (PEM block \"PRIVATE KEY\"): %w", ErrInvalid)
		}
		var key any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("private key: %v: %w", err, ErrInvalid)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign: %w", key, ErrInvalid)
		}
		return s, nil
	}
}

// NewCSR makes a certificate request for key: common name cn (the node
// id, for a node) and names.
func NewCSR(key crypto.Signer, cn string, names Names) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn}, DNSNames: names.DNS, IPAddresses: names.IPs,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseCSR reads a certificate request and checks its signature (the
// requester holds the key) and its key type.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("no certificate request (PEM block \"CERTIFICATE REQUEST\"): %w", ErrInvalid)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %v: %w", err, ErrInvalid)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %v: %w", err, ErrInvalid)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("RSA key of %d bits: want at least 2048: %w", k.N.BitLen(), ErrInvalid)
		}
	default:
		return nil, fmt.Errorf("key type %T: %w", k, ErrInvalid)
	}
	return csr, nil
}

// ParseBundle reads a trust bundle: one or more CA certificates.
func ParseBundle(bundlePEM []byte) ([]*x509.Certificate, *x509.CertPool, error) {
	certs, err := parseCerts(bundlePEM)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, nil, fmt.Errorf("%q in the trust bundle is not a CA certificate: %w", c.Subject.CommonName, ErrInvalid)
		}
		pool.AddCert(c)
	}
	return certs, pool, nil
}

// parseCerts reads every CERTIFICATE block; there must be at least one.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate: %v: %w", err, ErrInvalid)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no certificate (PEM block \"CERTIFICATE\"): %w", ErrInvalid)
	}
	return certs, nil
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// EncodeCerts encodes certificates as PEM, one after another.
func EncodeCerts(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		b.Write(encodeCert(c))
	}
	return b.Bytes()
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// newSerial is a random 128-bit serial number.
func newSerial() *big.Int {
	// rand.Int fails only for a bound below one, and crypto/rand's
	// reader does not fail (Go 1.24 and later end the program instead).
	s, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	// Serial numbers must be positive.
	return s.Add(s, big.NewInt(1))
}

// Serial formats a certificate's serial number as colon-separated hex, as
// openssl shows it.
func Serial(c *x509.Certificate) string {
	b := c.SerialNumber.Bytes()
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts, ":")
}
