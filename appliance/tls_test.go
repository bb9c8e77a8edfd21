package appliance

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	stdtls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/lesismal/llib/std/crypto/tls"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
)

// selfSigned returns a certificate for 127.0.0.1 in the server's (llib)
// TLS type and a client pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pushd test"},
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

// TestTLS_BothTransports serves both device listeners over TLS and opens a
// session through each with the SDK, on TLS 1.2 and 1.3.
func TestTLS_BothTransports(t *testing.T) {
	cert, pool := selfSigned(t)
	cfg := testConfig()
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	n := startNode(t, cfg, Deps{})
	urls := map[string]string{"wss": "wss://" + n.Addrs().WS + "/v1/ws", "tls": "tls://" + n.Addrs().TCP}
	for name, url := range urls {
		for _, v := range []uint16{stdtls.VersionTLS12, stdtls.VersionTLS13} {
			t.Run(name+"/"+stdtls.VersionName(v), func(t *testing.T) {
				device := "tls-" + name
				got := make(chan client.Message, 1)
				c, err := client.New(client.Config{URL: url, App: testApp, Device: device, Token: issue(t, device),
					TLS:       &stdtls.Config{RootCAs: pool, MinVersion: v, MaxVersion: v},
					OnMessage: func(m client.Message) { got <- m }})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- c.Run(ctx) }()
				defer func() { cancel(); <-done }()
				poll.Until(t, 5*time.Second, func() error {
					if !c.Connected() {
						return errors.New("not connected over TLS")
					}
					return nil
				})
				n.hub.fanout(wire.AppendPush(nil, &wire.Push{ID: "t", Payload: []byte("over tls")}), 1, broadcastGroup(testApp), audience{})
				select {
				case m := <-got:
					if string(m.Payload) != "over tls" {
						t.Fatalf("got %q", m.Payload)
					}
				case <-time.After(3 * time.Second):
					t.Fatal("no message over TLS")
				}
			})
		}
	}
}

// TestTLS_StalledHandshakeIsClosed: a client that starts a TLS handshake
// and never finishes it is closed within the handshake timeout plus a
// second, on both listeners.
func TestTLS_StalledHandshakeIsClosed(t *testing.T) {
	t.Parallel()
	cert, _ := selfSigned(t)
	cfg := testConfig()
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	n := startNode(t, cfg, Deps{})
	limit := cfg.HandshakeTimeout + time.Second
	for name, addr := range map[string]string{"ws": n.Addrs().WS, "tcp": n.Addrs().TCP} {
		t.Run(name, func(t *testing.T) {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			// The first bytes of a ClientHello record, then nothing.
			if _, err := nc.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = nc.SetReadDeadline(start.Add(limit + time.Second))
			buf := make([]byte, 512)
			for {
				if _, err = nc.Read(buf); err != nil {
					break
				}
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("still open after %s", time.Since(start))
			}
			if d := time.Since(start); d > limit {
				t.Fatalf("closed after %s, limit %s", d, limit)
			}
		})
	}
}
