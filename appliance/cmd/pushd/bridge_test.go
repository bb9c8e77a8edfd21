package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestBridgeOptions_TLSAndSASLReachKafka turns the bridge's flags into a
// bridge configuration — a CA file, and each SASL mechanism — and
// connects with it to a Kafka taking only TLS and that user.
func TestBridgeOptions_TLSAndSASLReachKafka(t *testing.T) {
	certPEM, keyPEM := selfSignedPEM(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, mech := range []string{"plain", "scram-sha-256", "scram-sha-512"} {
		t.Run(mech, func(t *testing.T) {
			kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}),
				kfake.EnableSASL(), kfake.Superuser(strings.ToUpper(mech), "pushd", "s3cret"))
			if err != nil {
				t.Fatal(err)
			}
			defer kafka.Close()
			o := bridgeOptions{Region: "bj", BridgeBrokers: kafka.ListenAddrs(), BridgePeers: []string{"sh"},
				BridgeTLSCA: ca, BridgeSASL: mech, BridgeSASLUser: "pushd", BridgeSASLPassword: "s3cret"}
			cfg, err := o.bridgeConfig(nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate("bj"); err != nil {
				t.Fatal(err)
			}
			cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.DialTLSConfig(cfg.TLS), kgo.SASL(cfg.SASL))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := cl.Ping(ctx); err != nil {
				t.Fatalf("ping over TLS with %s: %v", mech, err)
			}
			// The same with a wrong password fails: the ping proved the
			// credentials, not just the connection.
			o.BridgeSASLPassword = "wrong"
			bad, _ := o.bridgeConfig(nil)
			cl2, err := kgo.NewClient(kgo.SeedBrokers(bad.Brokers...), kgo.DialTLSConfig(bad.TLS), kgo.SASL(bad.SASL))
			if err != nil {
				t.Fatal(err)
			}
			defer cl2.Close()
			ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel2()
			if err := cl2.Ping(ctx2); err == nil {
				t.Fatalf("ping with a wrong %s password succeeded", mech)
			}
		})
	}
}

// TestCheckConfig_Bridge reads the bridge's settings from flags, the
// environment and a file, comma-separated lists included.
func TestCheckConfig_Bridge(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.json")
	if err := os.WriteFile(file, []byte(`{"region": "sh", "bridge-brokers": ["k1:9092"], "bridge-peers": ["bj"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--config", file}, nil, "region sh, data dir /var/lib/pushd, redis single 127.0.0.1:6379 db 0, durability strict\nbridge to bj through k1:9092\n"},
		{[]string{"--config", file, "--bridge-peers", "bj,gz", "--bridge-brokers", "k2:9092", "--bridge-brokers", "k3:9092"}, nil, "bridge to bj, gz through k2:9092, k3:9092\n"},
		{[]string{"--region", "gz"}, map[string]string{"PUSHD_BRIDGE_BROKERS": "k4:9092,k5:9092", "PUSHD_BRIDGE_PEERS": "bj"}, "region gz,"},
		{nil, nil, "region default, "},
	} {
		for k, v := range c.env {
			t.Setenv(k, v)
		}
		var out, errOut bytes.Buffer
		if code := runCLI(append(append([]string{"pushd"}, c.args...), "--check-config"), &out, &errOut); code != 0 || !strings.Contains(out.String(), c.want) {
			t.Errorf("%v %v: exit %d, stdout %q (want %q), stderr %q", c.args, c.env, code, out.String(), c.want, errOut.String())
		}
		for k := range c.env {
			t.Setenv(k, "")
		}
	}
}

func selfSignedPEM(t *testing.T) (certPEM, keyPEM []byte) {
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
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
