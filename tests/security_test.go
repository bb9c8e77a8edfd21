package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/regiontls"
	"github.com/pushd/pushd/streams/streamstest"
)

// secureRedis starts a redis-server as a region runs it: TLS only,
// clients with a certificate of the region CA (tls-auth-clients), and the
// ACL systemd/redis-pushd.acl ships (the default user off, pushd's user on
// pushd's keys). The region CA is one the test makes and the first node
// bootstraps with (--region-ca, --region-ca-key: an operator's own CA),
// so the nodes' certificates are what Redis asks its clients for.
func secureRedis(t *testing.T) regionRedis {
	t.Helper()
	dir := t.TempDir()
	ca, err := regiontls.NewCA("tests region CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	caDir := filepath.Join(dir, "ca")
	if err := ca.Save(caDir); err != nil {
		t.Fatal(err)
	}
	password := rand.Text()
	pwFile := filepath.Join(dir, "redis-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := streamstest.StartRedis(t, streamstest.TLS(streamstest.ServiceTLS(t, dir, ca)),
		streamstest.ACL(streamstest.PushdACL(t, dir, password), "pushd", password))
	return regionRedis{
		url:       srv.URL(),
		flags:     []string{"--redis-user", "pushd", "--redis-password-file", pwFile},
		bootstrap: []string{"--region-ca", filepath.Join(caDir, regiontls.BundleFile), "--region-ca-key", filepath.Join(caDir, regiontls.CAKeyFile)},
	}
}

// waitExit waits for a node that is expected to stop by itself and
// returns its exit status.
func (n *node) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	done := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatalf("%s still running %s after its start; log:\n%s", n.id, timeout, n.logs)
	}
	return n.cmd.ProcessState.ExitCode()
}

// pushctl runs bin/pushctl with args and returns its stdout.
func pushctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pushctl"), args...)
	cmd.Dir = t.TempDir()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("pushctl %s: %w: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), nil
}

// servedSerial handshakes with addr over cfg and returns the serial of
// the certificate the server presented.
func servedSerial(addr string, cfg *tls.Config) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return regiontls.Serial(c.ConnectionState().PeerCertificates[0]), nil
}

// nodeTLS loads n's region TLS material, to dial another node as n does.
func nodeTLS(t *testing.T, n *node) *regiontls.Node {
	t.Helper()
	m, err := regiontls.Load(filepath.Join(n.dir, "tls"), n.id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSecurity_StrangersAreRefused is T20 through the pushd binary: a
// node joining with another region's CA (or a wrong token) is told why
// and gets no certificate, and the region keeps one member; the admin API
// refuses plain HTTP, clients with another CA's certificate, and
// forwarding headers from anyone but a node; the Raft port answers no one
// without a node certificate of the region; the push API, given its own
// certificate, refuses plain HTTP and takes a new certificate on SIGHUP.
func TestSecurity_StrangersAreRefused(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t)
	pushCA, err := regiontls.NewCA("a business's CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	pushDir := t.TempDir()
	writeServiceCert(t, pushCA, pushDir, "push")
	first := newNode(t, "n1")
	first.flags = []string{"--push-tls-cert", filepath.Join(pushDir, "push.crt"), "--push-tls-key", filepath.Join(pushDir, "push.key")}
	first.start(t, srv.URL(), "--bootstrap")
	tok := adminToken(t, first)
	waitHealthy(t, first, 30*time.Second)

	// Joining with another region's CA: the member is not believed, the
	// token is not sent, nothing is written.
	other, err := regiontls.NewCA("another region", 0)
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(otherCA, other.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"another CA": {[]string{"--join", first.addr("admin"), "--join-token-file", tokFile, "--region-ca", otherCA},
			"does not present a certificate of the region CA"},
		"a wrong token": {[]string{"--join", first.addr("admin"), "--join-token-file", writeSecret(t, "pa_WRONG"), "--region-ca", first.caFile()},
			"401"},
		"no region CA": {[]string{"--join", first.addr("admin"), "--join-token-file", tokFile},
			"needs --region-ca"},
	} {
		stranger := newNode(t, "n2")
		stranger.start(t, srv.URL(), c.args...)
		if code := stranger.waitExit(t, 30*time.Second); code == 0 || !strings.Contains(stranger.logs.String(), c.want) {
			t.Fatalf("%s: exit %d, want a failure saying %q:\n%s", name, code, c.want, stranger.logs)
		}
		if _, err := os.Stat(filepath.Join(stranger.dir, "tls", regiontls.NodeFile)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: the refused node kept a certificate: %v", name, err)
		}
	}
	if st, err := status(t, first, tok); err != nil || len(st.Nodes) != 1 {
		t.Fatalf("the region after the refused joins: %+v, %v", st, err)
	}

	// The admin API over plain HTTP: no answer but 400, and no write.
	code, raw := call(t, &http.Client{Timeout: 5 * time.Second}, http.MethodPost, "http://"+first.addr("admin")+"/v1/admin/degrade", tok,
		map[string]any{"priority": "low", "reason": "over plain HTTP"})
	if code != http.StatusBadRequest {
		t.Fatalf("admin write over plain HTTP: HTTP %d %s", code, raw)
	}
	// With a client certificate of another CA: refused at the handshake.
	// (GetClientCertificate sends it whatever CAs the server names; Go's
	// client would otherwise send none and be taken as an operator with
	// a token.)
	strangerTLS := nodeCertOf(t, other, "n9")
	presentStranger := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &strangerTLS, nil }
	hc := adminClient(t, first)
	hc.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = presentStranger
	if code, raw := call(t, hc, http.MethodPost, first.adminURL()+"/v1/admin/degrade", tok,
		map[string]any{"priority": "low", "reason": "another CA"}); code != 0 {
		t.Fatalf("admin write with another CA's certificate: HTTP %d %s", code, raw)
	}
	// Forwarding headers are the nodes' own.
	req, _ := http.NewRequest(http.MethodPost, first.adminURL()+"/v1/admin/degrade", strings.NewReader(`{"priority":"low","reason":"forged"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Pushd-Forwarded-By", "n7")
	resp, err := adminClient(t, first).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a forged forwarded write: HTTP %d %s", resp.StatusCode, body)
	}
	if code, raw := admin(t, first, http.MethodGet, "/v1/admin/degrade", tok, nil); code != http.StatusOK || !strings.Contains(string(raw), `"active":false`) {
		t.Fatalf("degrade after the refused writes: HTTP %d %s", code, raw)
	}

	// The Raft port: a read index over plain TCP, or over TLS with
	// another CA's node certificate, gets no answer.
	raftAddr := first.addr("raft")
	for name, dial := range map[string]func() (net.Conn, error){
		"plain TCP": func() (net.Conn, error) { return net.DialTimeout("tcp", raftAddr, 5*time.Second) },
		"another CA": func() (net.Conn, error) {
			return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", raftAddr,
				&tls.Config{InsecureSkipVerify: true, GetClientCertificate: presentStranger})
		},
	} {
		conn, err := dial()
		if err != nil {
			continue // refused at the handshake already
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = conn.Write([]byte{'R'})
		if n, err := conn.Read(make([]byte, 9)); err == nil {
			t.Fatalf("%s: the Raft port answered %d bytes", name, n)
		}
		conn.Close()
	}

	// The push API with its own certificate.
	if code, raw := call(t, &http.Client{Timeout: 5 * time.Second}, http.MethodPost, "http://"+first.addr("push")+"/v1/push", "key",
		map[string]any{"app": "a", "devices": []string{"d"}, "data": "x"}); code != http.StatusBadRequest {
		t.Fatalf("push over plain HTTP: HTTP %d %s", code, raw)
	}
	pushPool := x509.NewCertPool()
	pushPool.AddCert(pushCA.Cert)
	pushCfg := &tls.Config{RootCAs: pushPool, ServerName: "127.0.0.1"}
	before, err := servedSerial(first.addr("push"), pushCfg)
	if err != nil {
		t.Fatalf("push API over TLS with its own CA: %v", err)
	}
	writeServiceCert(t, pushCA, pushDir, "push")
	first.signal(t, syscall.SIGHUP)
	poll.Until(t, 10*time.Second, func() error {
		after, err := servedSerial(first.addr("push"), pushCfg)
		if err != nil || after == before {
			return fmt.Errorf("push API serves %s (before SIGHUP %s): %v", after, before, err)
		}
		return nil
	})

	// A node.pem that does not load is refused on SIGHUP; the node keeps
	// serving the certificate it had.
	adminCfg := &tls.Config{RootCAs: adminClient(t, first).Transport.(*http.Transport).TLSClientConfig.RootCAs, ServerName: "127.0.0.1"}
	serial, err := servedSerial(first.addr("admin"), adminCfg)
	if err != nil {
		t.Fatal(err)
	}
	stray := nodeCertOf(t, other, "n1")
	strayPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: stray.Certificate[0]})
	if err := os.WriteFile(filepath.Join(first.dir, "tls", regiontls.NodeFile), strayPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	first.signal(t, syscall.SIGHUP)
	poll.Until(t, 10*time.Second, func() error {
		if !strings.Contains(first.logs.String(), "region certificates not reloaded") {
			return errors.New("no word of the refused reload yet")
		}
		return nil
	})
	if got, err := servedSerial(first.addr("admin"), adminCfg); err != nil || got != serial {
		t.Fatalf("after a refused reload the admin API serves %s (%v), want %s", got, err, serial)
	}

	// Both certificates' expiry on /metrics.
	resp, err = http.Get("http://" + first.addr("ws") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"pushd_tls_node_certificate_expiry_timestamp_seconds ", "pushd_tls_push_certificate_expiry_timestamp_seconds "} {
		if !bytes.Contains(metrics, []byte(m)) {
			t.Errorf("no %s on /metrics", m)
		}
	}
}

// writeServiceCert writes name.crt and name.key, a service certificate of
// ca for 127.0.0.1, into dir.
func writeServiceCert(t *testing.T, ca *regiontls.CA, dir, name string) {
	t.Helper()
	key, err := regiontls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := regiontls.NewCSR(key, name, regiontls.ParseNames([]string{"127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.Issue(csr, regiontls.KindService, 0)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := regiontls.EncodeKey(key)
	if err := regiontls.WriteFile(dir, name+".key", keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := regiontls.WriteFile(dir, name+".crt", certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
}

// nodeCertOf is a node certificate of ca for id, as a tls.Certificate.
func nodeCertOf(t *testing.T, ca *regiontls.CA, id string) tls.Certificate {
	t.Helper()
	dir := t.TempDir()
	if err := ca.IssueNode(dir, id, regiontls.ParseNames([]string{"127.0.0.1"}), 0); err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, regiontls.NodeFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(pem, pem)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeSecret writes s to a file of mode 0600 and returns its path.
func writeSecret(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSecurity_RotateCertificatesWhileTheRegionCommits: pushctl tls
// rotate gives the Raft leader, then a follower, a new key and
// certificate while admin writes keep coming through the follower, and
// none of them fails; a node restarted afterwards talks to both on their
// new certificates, and the ports serve them.
func TestSecurity_RotateCertificatesWhileTheRegionCommits(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs three pushd processes")
	}
	nodes, tok, redisURL := startRegion(t)
	// A status read can fall in an election on a busy machine (no
	// leader): read until one names the leader.
	var leader, follower, third *node
	poll.Until(t, 30*time.Second, func() error {
		st, err := status(t, nodes[0], tok)
		if err != nil {
			return err
		}
		leader, follower, third = nil, nil, nil
		for _, n := range nodes {
			switch {
			case n.id == st.Leader:
				leader = n
			case follower == nil:
				follower = n
			default:
				third = n
			}
		}
		if leader == nil {
			return fmt.Errorf("status names leader %q", st.Leader)
		}
		return nil
	})

	var writes, failures atomic.Int64
	var lastFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		hc := adminClient(t, follower)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			code, raw := call(t, hc, http.MethodPost, follower.adminURL()+"/v1/admin/tunables", tok, map[string]any{"inbox_max_len": 1000 + i%10})
			if code != http.StatusOK {
				failures.Add(1)
				lastFailure.Store(fmt.Sprintf("HTTP %d %s", code, raw))
				continue
			}
			writes.Add(1)
		}
	}()
	more := func(n int64) {
		t.Helper()
		target := writes.Load() + n
		poll.Until(t, 30*time.Second, func() error {
			if w := writes.Load(); w < target {
				return fmt.Errorf("%d writes, want %d", w, target)
			}
			return nil
		})
	}
	more(10)

	rotated := map[string]string{}
	for _, n := range []*node{leader, follower} {
		out, err := pushctl(t, "tls", "rotate", n.id, "--admin-url", follower.adminURL(), "--ca-file", follower.caFile(),
			"--admin-token", tok, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var res struct{ Node, Serial, PreviousSerial string }
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Node != n.id || res.Serial == res.PreviousSerial {
			t.Fatalf("pushctl tls rotate %s: %s (%v)", n.id, out, err)
		}
		rotated[n.id] = res.Serial
		more(10)
	}

	// New connections: the third node restarted dials both and is dialed
	// by both, on the new certificates.
	third.kill()
	more(10)
	third.start(t, redisURL)
	poll.Until(t, 30*time.Second, func() error {
		st, err := status(t, third, tok)
		if err != nil {
			return err
		}
		for _, s := range st.Nodes {
			if !s.Alive {
				return fmt.Errorf("%s not alive", s.ID)
			}
		}
		return nil
	})
	more(10)
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d admin writes failed around the rotations; last: %v", n, n+writes.Load(), lastFailure.Load())
	}
	t.Logf("%d admin writes through %s, none failed, while %s and %s rotated", writes.Load(), follower.id, leader.id, follower.id)

	peer := nodeTLS(t, third)
	for _, n := range []*node{leader, follower} {
		for _, port := range []string{"raft", "admin"} {
			got, err := servedSerial(n.addr(port), peer.ClientConfig(n.addr(port)))
			if err != nil || got != rotated[n.id] {
				t.Fatalf("%s's %s port serves %s, want the rotated %s (%v)", n.id, port, got, rotated[n.id], err)
			}
		}
	}
	out, err := pushctl(t, "tls", "list", "--admin-url", leader.adminURL(), "--ca-file", leader.caFile(), "--admin-token", tok)
	if err != nil {
		t.Fatal(err)
	}
	for id, serial := range rotated {
		if !strings.Contains(out, id) || !strings.Contains(out, serial) {
			t.Fatalf("pushctl tls list does not show %s with %s:\n%s", id, serial, out)
		}
	}

	// The CA key is on the first node only, in its tls directory, and in
	// no node's Raft log or snapshots, in PEM or in DER.
	keyPEM, err := os.ReadFile(filepath.Join(nodes[0].dir, "tls", regiontls.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	body := strings.Join(strings.Split(strings.TrimSpace(string(keyPEM)), "\n")[1:3], "")
	for _, n := range nodes {
		if n != nodes[0] {
			if _, err := os.Stat(filepath.Join(n.dir, "tls", regiontls.CAKeyFile)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("%s has the CA key: %v", n.id, err)
			}
		}
		for _, sub := range []string{"raft", "snapshots"} {
			_ = filepath.WalkDir(filepath.Join(n.dir, sub), func(path string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				if bytes.Contains(b, block.Bytes) || bytes.Contains(b, []byte(body)) {
					t.Fatalf("the CA key is in %s", path)
				}
				return nil
			})
		}
	}
}

// TestSecurity_RedisCredentials: Redis as a region runs it refuses a
// client without a certificate of the region CA at the handshake, and one
// without the password; pushd with a wrong password ends its start with
// a message that says what to check; with the right one it serves.
func TestSecurity_RedisCredentials(t *testing.T) {
	t.Parallel()
	rr := secureRedis(t)
	addr := strings.TrimSuffix(strings.TrimPrefix(rr.url, "rediss://"), "/0")
	ctx := context.Background()
	for name, opts := range map[string]*redis.Options{
		"plain TCP":                  {Addr: addr, Username: "pushd", Password: "x"},
		"TLS, no client certificate": {Addr: addr, TLSConfig: &tls.Config{InsecureSkipVerify: true}},
	} {
		opts.MaxRetries = -1
		rdb := redis.NewClient(opts)
		if err := rdb.Ping(ctx).Err(); err == nil || strings.Contains(err.Error(), "NOAUTH") || strings.Contains(err.Error(), "WRONGPASS") {
			t.Errorf("%s: %v, want a connection refused before any command", name, err)
		}
		rdb.Close()
	}

	bad := newNode(t, "n1")
	bad.flags = []string{"--redis-user", "pushd", "--redis-password-file", writeSecret(t, "not-the-password")}
	bad.start(t, rr.url, append([]string{"--bootstrap"}, rr.bootstrap...)...)
	if code := bad.waitExit(t, 30*time.Second); code != 1 || !strings.Contains(bad.logs.String(), `refused pushd's credentials (user "pushd")`) {
		t.Fatalf("pushd with a wrong Redis password: exit %d, log:\n%s", code, bad.logs)
	}
	other, err := regiontls.NewCA("not Redis's CA", 0)
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(t.TempDir(), "other.crt")
	if err := os.WriteFile(otherCA, other.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	untrusting := newNode(t, "n1")
	untrusting.flags = append([]string{"--redis-ca", otherCA}, rr.flags...)
	untrusting.start(t, rr.url, append([]string{"--bootstrap"}, rr.bootstrap...)...)
	if code := untrusting.waitExit(t, 30*time.Second); code != 1 || !strings.Contains(untrusting.logs.String(), "its TLS certificate is not trusted") {
		t.Fatalf("pushd not trusting Redis's certificate: exit %d, log:\n%s", code, untrusting.logs)
	}

	good := newNode(t, "n1")
	good.flags = rr.flags
	good.start(t, rr.url, append([]string{"--bootstrap"}, rr.bootstrap...)...)
	waitHealthy(t, good, 30*time.Second)
	tok := adminToken(t, good)
	code, raw := admin(t, good, http.MethodPost, "/v1/admin/apps", tok, map[string]any{"id": "sec"})
	if code != http.StatusOK {
		t.Fatalf("create app: HTTP %d %s", code, raw)
	}
	var app struct {
		APIKey string `json:"api_key"`
	}
	_ = json.Unmarshal(raw, &app)
	if code, raw := pushAs(t, good, app.APIKey, map[string]any{"app": "sec", "devices": []string{"d1"}, "data": "x"}); code != http.StatusOK ||
		!strings.Contains(string(raw), `"stored":true`) {
		t.Fatalf("push stored in Redis over TLS as pushd's user: HTTP %d %s", code, raw)
	}
}

// TestSecurity_InsecurePlaintextIsExplicitAndLoud: outside --dev a node
// runs without TLS only when told to, says so at ERROR level, and then
// keeps no region certificates; a node given neither --bootstrap nor
// --join nor a certificate refuses to start and says how to get one.
func TestSecurity_InsecurePlaintextIsExplicitAndLoud(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t)
	lone := newNode(t, "n1")
	lone.start(t, srv.URL())
	if code := lone.waitExit(t, 30*time.Second); code != 1 || !strings.Contains(lone.logs.String(), "no node certificate in") {
		t.Fatalf("a node with no certificate and no way to get one: exit %d, log:\n%s", code, lone.logs)
	}

	n := newNode(t, "n1")
	n.flags = []string{"--insecure-plaintext"}
	n.start(t, srv.URL(), "--bootstrap")
	tok := adminToken(t, n)
	if st, err := status(t, n, tok); err != nil || len(st.Nodes) != 1 {
		t.Fatalf("status over plain HTTP: %+v, %v", st, err)
	}
	logs := n.logs.String()
	if !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "Raft and the admin API run WITHOUT TLS") {
		t.Fatalf("no loud line about running without TLS:\n%s", logs)
	}
	if _, err := os.Stat(filepath.Join(n.dir, "tls")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a plaintext node made TLS material: %v", err)
	}
}
