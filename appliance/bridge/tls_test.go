package bridge_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/bridge"
	"github.com/pushd/pushd/internal/poll"
)

// TestBridge_TLSAndSASL runs the bridge against a Kafka that takes only
// TLS connections authenticated with SCRAM-SHA-512: bj and sh, with the
// right CA and password, exchange a push; a region with a wrong password
// counts connect errors in its status.
func TestBridge_TLSAndSASL(t *testing.T) {
	t.Parallel()
	cert, pool := selfSignedCert(t)
	kafka := startKafka(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "pushd", "s3cret"))
	secure := func(pass string) func(*regionOpts) {
		return func(o *regionOpts) {
			o.bridge = func(c *bridge.Config) {
				c.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
				c.SASL = scram.Auth{User: "pushd", Pass: pass}.AsSha512Mechanism()
			}
		}
	}
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs(), secure("s3cret"))
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs(), secure("s3cret"))
	phone := connect(t, sh, "phone-1")
	resp := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh")})
	phone.waitIDs(t, 15*time.Second, []string{resp.ID})

	gz := startRegion(t, "gz", []string{"sh"}, kafka.ListenAddrs(), secure("wrong"))
	poll.Until(t, 15*time.Second, func() error {
		st := gz.node().Bridge.Status()
		if st.Errors == 0 || !strings.HasPrefix(st.LastError, "connect: ") {
			return fmt.Errorf("gz's bridge reports %d errors, last %q", st.Errors, st.LastError)
		}
		return nil
	})
	if n := metric(t, gz, "pushd_bridge_errors_total", "kind=connect"); n == 0 {
		t.Fatal("no connect error in gz's metrics")
	}
}

// selfSignedCert is a certificate for 127.0.0.1 and a pool trusting it.
func selfSignedCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kafka test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	cert, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	parsed, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(parsed)
	return cert, pool
}
