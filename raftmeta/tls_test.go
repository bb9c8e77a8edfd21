package raftmeta_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/raftmeta/raftmetatest"
	"github.com/pushd/pushd/regiontls"
)

// attacker is a raft transport from outside the region: it dials with
// cfg (nil: plain TCP) and never accepts.
type attacker struct {
	cfg    *tls.Config
	closed chan struct{}
	once   sync.Once
}

func (a *attacker) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if a.cfg == nil {
		return d.Dial("tcp", string(addr))
	}
	return tls.DialWithDialer(d, "tcp", string(addr), a.cfg)
}

func (a *attacker) Accept() (net.Conn, error) {
	<-a.closed
	return nil, net.ErrClosed
}

func (a *attacker) Close() error {
	a.once.Do(func() { close(a.closed) })
	return nil
}

func (a *attacker) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// appendEntriesAs sends every node a heartbeat from a "leader" of a far
// higher term over cfg. Raft takes such a term at once: a follower
// adopts it and a leader steps down, so a heartbeat that got through
// would show in every node's term.
func appendEntriesAs(t *testing.T, c *raftmetatest.Cluster, cfg *tls.Config, term uint64) []error {
	t.Helper()
	a := &attacker{cfg: cfg, closed: make(chan struct{})}
	trans := raft.NewNetworkTransport(a, 1, 2*time.Second, io.Discard)
	defer trans.Close()
	var errs []error
	for i := range c.Len() {
		req := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte(a.Addr().String())},
			Term:      term,
		}
		var resp raft.AppendEntriesResponse
		m := c.Member(i)
		errs = append(errs, trans.AppendEntries(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr), req, &resp))
	}
	return errs
}

// maxTerm is the highest term any node is in.
func maxTerm(c *raftmetatest.Cluster) uint64 {
	var m uint64
	for i := range c.Len() {
		m = max(m, c.Store(i).Stats().Term)
	}
	return m
}

// digests are the nodes' FSM digests.
func digests(c *raftmetatest.Cluster) string {
	var d []string
	for i := range c.Len() {
		d = append(d, c.Store(i).Digest())
	}
	return fmt.Sprint(d)
}

// TestTLS_PeerWithoutARegionNodeCertificateIsRefused: a peer that
// speaks raft over plain TCP, or over TLS with a certificate from another
// CA, or with a certificate of the region's CA that is not a node's
// (Redis's, say), is refused at the handshake. Its heartbeat of a term a
// thousand ahead, which raft would otherwise obey at once, reaches no
// node: no node ever takes that term (an election of the region's own,
// which a busy machine may see, moves terms by one or two), the state
// stays as it was, no read index is answered, and the region goes on
// committing. The same heartbeat from a region node certificate does
// take every node to that term, so the test sees a change when there is
// one.
func TestTLS_PeerWithoutARegionNodeCertificateIsRefused(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	c.WaitForLeader(t)
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.Apply(ctx, raftmeta.CreateApp(newApp("before"))); err != nil {
		t.Fatal(err)
	}
	c.WaitConverged(t)
	before := digests(c)
	attackTerm := maxTerm(c) + 1000

	other, err := regiontls.NewCA("another region", 0)
	if err != nil {
		t.Fatal(err)
	}
	strangerDir := t.TempDir()
	if err := other.IssueNode(strangerDir, "node9", regiontls.ParseNames([]string{"127.0.0.1"}), 0); err != nil {
		t.Fatal(err)
	}
	stranger, err := regiontls.Load(strangerDir, "node9")
	if err != nil {
		t.Fatal(err)
	}
	strangerCfg := stranger.ClientConfig("127.0.0.1:0")
	// It cannot verify the region's server either; let it go on, so
	// what is tested is the server refusing it.
	strangerCfg.InsecureSkipVerify, strangerCfg.VerifyConnection = true, nil

	serviceCfg := &tls.Config{ServerName: "127.0.0.1", RootCAs: c.TLS(0).Roots(), Certificates: []tls.Certificate{serviceCert(t, c.CA())}}

	for name, cfg := range map[string]*tls.Config{
		"plain TCP":               nil,
		"another CA's node":       strangerCfg,
		"the region CA's service": serviceCfg,
		"no certificate over TLS": {ServerName: "127.0.0.1", RootCAs: c.TLS(0).Roots()},
	} {
		for i, err := range appendEntriesAs(t, c, cfg, attackTerm) {
			if err == nil {
				t.Errorf("%s: node %d answered the heartbeat", name, i)
			}
		}
		if _, err := readIndexAs(c.Member(0).RaftAddr, cfg); err == nil {
			t.Errorf("%s: the read index answered", name)
		}
	}
	if term := maxTerm(c); term >= attackTerm {
		t.Fatalf("a node took the intruders' term %d", term)
	}
	if after := digests(c); after != before {
		t.Fatalf("the state changed: before %s, after %s", before, after)
	}
	if _, err := c.Apply(ctx, raftmeta.CreateApp(newApp("after"))); err != nil {
		t.Fatalf("the region stopped committing: %v", err)
	}

	// A region node certificate gets the same heartbeat through.
	for i, err := range appendEntriesAs(t, c, c.TLS(1).ClientConfig(c.Member(0).RaftAddr), attackTerm) {
		if err != nil {
			t.Errorf("as a region node: node %d: %v", i, err)
		}
	}
	poll.Until(t, 10*time.Second, func() error {
		if term := c.Store(0).Stats().Term; term < attackTerm {
			return fmt.Errorf("term %d, want at least %d", term, attackTerm)
		}
		return nil
	})
}

// serviceCert is a certificate of ca for a service, not a node.
func serviceCert(t *testing.T, ca *regiontls.CA) tls.Certificate {
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
	keyPEM, _ := regiontls.EncodeKey(key)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// readIndexAs asks the raft port at addr for a read index over cfg (nil:
// plain TCP) and returns the answer's status byte.
func readIndexAs(addr string, cfg *tls.Config) (byte, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	var conn net.Conn
	var err error
	if cfg == nil {
		conn, err = d.Dial("tcp", addr)
	} else {
		conn, err = tls.DialWithDialer(d, "tcp", addr, cfg)
	}
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte{'R'}); err != nil {
		return 0, err
	}
	var answer [9]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return 0, err
	}
	return answer[0], nil
}

// TestTLS_RotatingANodeCertificateWhileTheRegionCommits: the leader gets
// a new key and certificate while writes keep coming; none fails, and
// the connections made afterwards (a follower restarted, a read index)
// run on the new certificate.
func TestTLS_RotatingANodeCertificateWhileTheRegionCommits(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	li, _ := c.WaitForLeader(t)
	ctx := ctxT(t, 60*time.Second)

	var applied, failed atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Apply(ctx, raftmeta.CreateApp(newApp(fmt.Sprintf("app-%d", i)))); err != nil {
				failed.Add(1)
				lastErr.Store(err)
				continue
			}
			applied.Add(1)
		}
	}()
	waitApplied := func(n int64) {
		t.Helper()
		poll.Until(t, 30*time.Second, func() error {
			if got := applied.Load(); got < n {
				return fmt.Errorf("%d writes applied, want %d", got, n)
			}
			return nil
		})
	}
	waitApplied(20)

	rotated := c.TLS(li)
	old := regiontls.Serial(rotated.Certificate())
	key, err := regiontls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := regiontls.NewCSR(key, c.Member(li).ID, rotated.Names())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := c.CA().Issue(csr, regiontls.KindNode, 0)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := regiontls.EncodeKey(key)
	if err := rotated.Install(append(keyPEM, certPEM...)); err != nil {
		t.Fatal(err)
	}
	fresh := regiontls.Serial(rotated.Certificate())
	if fresh == old {
		t.Fatal("the certificate did not change")
	}
	mark := applied.Load()
	waitApplied(mark + 20)

	// A follower restarted now opens new connections to the leader and
	// takes new ones from it: they run on the new certificate.
	follower := (li + 1) % 3
	c.Kill(follower)
	waitApplied(applied.Load() + 20)
	restarted := c.Restart(t, follower)
	if err := restarted.Sync(ctx); err != nil {
		t.Fatalf("read index from the rotated leader: %v", err)
	}
	waitApplied(applied.Load() + 20)
	close(stop)
	<-done
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d writes failed around the rotation; last: %v", n, n+applied.Load(), lastErr.Load())
	}
	c.WaitConverged(t)

	conn, err := tls.Dial("tcp", c.Member(li).RaftAddr, c.TLS(follower).ClientConfig(c.Member(li).RaftAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := regiontls.Serial(conn.ConnectionState().PeerCertificates[0]); got != fresh {
		t.Fatalf("the rotated node serves certificate %s, want the new %s (old %s)", got, fresh, old)
	}
}
