package tests

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
)

// writeSelfSigned writes a certificate for 127.0.0.1 and its key into
// dir and returns their paths.
func writeSelfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pushd dev"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(k)
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// pushctlIn runs the tests' pushctl in dir with env only (and PATH).
func pushctlIn(t *testing.T, dir string, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "pushctl"), args...)
	cmd.Dir, cmd.Env = dir, append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// listenIn starts pushctl listen -o json in dir with env and args.
func listenIn(t *testing.T, dir string, env []string, args ...string) *listener {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "pushctl"), append([]string{"listen", "-o", "json"}, args...)...)
	cmd.Dir, cmd.Env = dir, append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	return startListener(t, cmd)
}

// TestDevSettings_DataDirAndTLS: a dev region with its own --data-dir and
// TLS on its device listeners writes wss:// and tls:// URLs and its
// certificate into its settings; pushctl finds those settings from any
// directory while the region runs, and trusts the certificate on the
// device side; --ca-file and --insecure do it by hand; the stopped region is
// not found any more.
func TestDevSettings_DataDirAndTLS(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	cfgHome := filepath.Join(base, "config")
	cert, key := writeSelfSigned(t, base)
	dataDir := filepath.Join(base, "region")
	out := &logBuffer{}
	logs := &logBuffer{}
	cmd := exec.Command(filepath.Join(bin, "pushd"), "--dev", "--data-dir", dataDir, "--tls-cert", cert, "--tls-key", key,
		"--ws-addr", "127.0.0.1:0", "--tcp-addr", "127.0.0.1:0", "--push-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+cfgHome)
	cmd.Stdout, cmd.Stderr = out, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		failOnRace(t, "pushd --dev", logs)
		if t.Failed() {
			t.Logf("log of pushd --dev:\n%s", logs)
		}
	})
	settings := filepath.Join(dataDir, "pushctl.json")
	var info struct {
		WSURL  string `json:"ws_url"`
		TCPURL string `json:"tcp_url"`
		CAFile string `json:"ca_file"`
	}
	poll.Until(t, 30*time.Second, func() error {
		b, err := os.ReadFile(settings)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &info)
	})
	if !strings.HasPrefix(info.WSURL, "wss://127.0.0.1:") || !strings.HasPrefix(info.TCPURL, "tls://127.0.0.1:") || info.CAFile != cert {
		t.Fatalf("settings %+v, want wss://, tls:// and ca_file %s", info, cert)
	}
	poll.Until(t, 10*time.Second, func() error {
		for _, want := range []string{"device WebSocket  " + info.WSURL, "device TCP        " + info.TCPURL,
			"device TLS        certificate " + cert, "pushctl settings  " + settings + " (found by pushctl from any directory while this region runs)"} {
			if !strings.Contains(out.String(), want) {
				return fmt.Errorf("banner lacks %q:\n%s", want, out)
			}
		}
		return nil
	})
	if b, err := os.ReadFile(filepath.Join(cfgHome, "pushd", "dev-settings")); err != nil || strings.TrimSpace(string(b)) != settings {
		t.Fatalf("settings pointer %q, %v", b, err)
	}

	// From another directory, with no settings but the pointer.
	elsewhere := t.TempDir()
	env := []string{"XDG_CONFIG_HOME=" + cfgHome}
	if code, stdout, stderr := pushctlIn(t, elsewhere, env, "push", "--device", "phone", "--data", "over tls"); code != 0 {
		t.Fatalf("push: exit %d\n%s%s", code, stdout, stderr)
	}
	l := listenIn(t, elsewhere, env, "--device", "phone")
	if p := l.next(t, "PUSH"); p["payload"] != "over tls" {
		t.Fatalf("listen got %v", p)
	}
	l.stop()

	// By hand: settings without the certificate, and --ca-file or --insecure.
	b, _ := os.ReadFile(settings)
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	delete(raw, "ca_file")
	b, _ = json.Marshal(raw)
	bare := filepath.Join(base, "bare.json")
	if err := os.WriteFile(bare, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, extra := range [][]string{{"--ca-file", cert}, {"--insecure"}} {
		l := listenIn(t, elsewhere, nil, append([]string{"--config", bare, "--device", "phone"}, extra...)...)
		if w := l.next(t, "WELCOME"); w["node"] == "" {
			t.Fatalf("%v: WELCOME %v", extra, w)
		}
		l.stop()
	}
	notPEM := filepath.Join(base, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ca := range []string{notPEM, filepath.Join(base, "missing.pem")} {
		code, stdout, stderr := pushctlIn(t, elsewhere, nil, "listen", "--config", bare, "--device", "phone", "--ca-file", ca)
		if code != 2 || stdout != "" || !strings.Contains(stderr, "pushctl: --ca") {
			t.Fatalf("--ca-file %s: exit %d, %q %q", ca, code, stdout, stderr)
		}
	}

	// Stopped, the region is no longer found.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pushd --dev after SIGTERM: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfgHome, "pushd", "dev-settings")); !os.IsNotExist(err) {
		t.Fatalf("settings pointer left after the region stopped: %v", err)
	}
	code, _, stderr := pushctlIn(t, elsewhere, env, "push", "--device", "phone", "--data", "x")
	if code != 2 || !strings.Contains(stderr, "pushctl: missing app") {
		t.Fatalf("push with the region gone: exit %d, %q", code, stderr)
	}
}
