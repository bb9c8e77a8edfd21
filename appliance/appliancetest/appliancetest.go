// Package appliancetest runs pushd nodes inside a test process: an
// appliance.Node with its push API and, with region metadata, its admin
// API on loopback listeners, and whole regions of them around a real
// redis-server and real Raft (streamstest, raftmetatest). The API
// packages, pushctl and the end-to-end tests use it, so a node is wired
// for tests the way appliance/cmd/pushd wires it, in one place.
//
//	r := appliancetest.StartRegion(t, 3, appliancetest.RegionOptions{})
//	cl, _ := api.NewClient(r.Nodes[0].AdminURL, r.Admin, nil)
//
// Under -race (RaceEnabled) a node opens no nbio listener: devices reach
// it through ServeConn on a std listener (TCPURL), and its device port's
// HTTP endpoints through a std server (HTTPURL); WSURL is empty. Tests
// that need nbio's listeners themselves skip under -race.
//
// A region's Raft runs mutual TLS (raftmetatest's default). Its admin API
// runs plain HTTP unless RegionOptions.TLS: most tests of a region test
// what the admin API answers, not how it is carried, and an https URL
// would need every one of their clients to trust the region's CA. With
// TLS, the admin API is HTTPS with each node's certificate, node-to-node
// calls present it, node 0 keeps the CA key (as the node that formed the
// region does), and Node.Client trusts the region CA.
package appliancetest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/adminapi"
	"github.com/pushd/pushd/appliance/bridge"
	"github.com/pushd/pushd/appliance/pushapi"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/raftmeta/raftmetatest"
	"github.com/pushd/pushd/regiontls"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
)

// Node is a node running in the test process.
type Node struct {
	*appliance.Node
	// PushURL is the push API (http://host:port).
	PushURL string
	// AdminURL is the admin API; "" without region metadata.
	AdminURL string
	// WSURL is the WebSocket device URL (ws://…/v1/ws); "" under -race.
	WSURL string
	// TCPURL is the raw TCP device URL (tcp://host:port): nbio's TCP
	// listener, or under -race a std listener serving ServeConn.
	TCPURL string
	// HTTPURL is the device port's plain HTTP (/healthz, /v1/dispatch,
	// /metrics), as http://host:port.
	HTTPURL string
	// Client reaches AdminURL (https with TLS: it trusts the region CA
	// and presents no certificate, as pushctl does) and PushURL.
	Client *http.Client
	// Bridge is the node's bridge to other regions; nil without one.
	Bridge *bridge.Bridge

	stopOnce sync.Once
	stopErr  error
	stop     func(ctx context.Context) error
}

// Stop stops the node before the test ends, as its process would stop:
// the APIs' listeners close, the node shuts down (telling its devices to
// reconnect elsewhere) and its device connections end. Later calls, and
// the test's end, return the first call's error.
func (n *Node) Stop(ctx context.Context) error {
	n.stopOnce.Do(func() { n.stopErr = n.stop(ctx) })
	return n.stopErr
}

// DeviceURL is where a device connects: WSURL, or TCPURL under -race.
func (n *Node) DeviceURL() string {
	if n.WSURL != "" {
		return n.WSURL
	}
	return n.TCPURL
}

// Options configure one node.
type Options struct {
	// Config is the node's configuration. WSAddr and TCPAddr are set to
	// loopback ports (or left empty under -race). Zero: TestConfig().
	Config appliance.Config
	// Store is the region's Redis. Zero: the node stores nothing.
	Store appliance.Store
	// Meta is the region's metadata. Zero: apps come from Config.Apps and
	// there is no admin API.
	Meta *raftmeta.Store
	// Logger receives the node's logs. Zero: discarded.
	Logger *slog.Logger
	// TLS, with Meta, serves the admin API over HTTPS with this node's
	// region certificate (adminapi.TLS). Zero: plain HTTP.
	TLS *regiontls.Node
	// Bridge, when set, builds the node's bridge to other regions once
	// the node runs, as pushd does: it is started, handed to the push and
	// admin APIs, and closed before the node stops.
	Bridge func(node *appliance.Node) (*bridge.Bridge, error)
}

// TestConfig is a node configuration with timings short enough for tests
// and no per-IP connect limit.
func TestConfig() appliance.Config {
	return appliance.Config{
		NodeID:            "n1",
		HandshakeTimeout:  2 * time.Second,
		HeartbeatInterval: 400 * time.Millisecond,
		TimerTick:         20 * time.Millisecond,
		AckTimeout:        300 * time.Millisecond,
		AckBackoffMax:     time.Second,
		ConnectRate:       -1,
		DrainSpread:       200 * time.Millisecond,
		// A region's nodes learn of each other within one heartbeat:
		// StartRegion waits for that.
		NodeHeartbeat: 200 * time.Millisecond,
	}
}

// Start starts a node and its APIs, waits until it is ready, and stops
// them all when the test ends.
func Start(t testing.TB, opts Options) *Node {
	t.Helper()
	cfg := opts.Config
	if cfg.NodeID == "" {
		base := TestConfig()
		base.Apps = cfg.Apps
		cfg = base
	}
	var connLis net.Listener
	if !RaceEnabled {
		cfg.WSAddr, cfg.TCPAddr = "127.0.0.1:0", "127.0.0.1:0"
	} else {
		cfg.WSAddr, cfg.TCPAddr = "", ""
		var err error
		if connLis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = connLis.Close() })
		// Dispatch and drains name this listener.
		cfg.AdvertiseTCP = connLis.Addr().String()
	}
	deps := appliance.Deps{Logger: opts.Logger, Store: opts.Store}
	if opts.Meta != nil {
		deps.Meta = opts.Meta
	}
	node, err := appliance.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{Node: node, Client: &http.Client{Timeout: 30 * time.Second}}
	var servers []*http.Server
	var listeners []net.Listener
	serve := func(h http.Handler, tc *tls.Config) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		scheme := "http://"
		if tc != nil {
			ln, scheme = tls.NewListener(ln, tc), "https://"
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		go func() { _ = srv.Serve(ln) }()
		return scheme + ln.Addr().String()
	}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	pushOpts := pushapi.Options{Logger: opts.Logger, Registry: node.Registry()}
	adminOpts := adminapi.Options{Logger: opts.Logger}
	if opts.Bridge != nil {
		var err error
		if n.Bridge, err = opts.Bridge(node); err != nil {
			t.Fatal(err)
		}
		if err := n.Bridge.Start(); err != nil {
			t.Fatal(err)
		}
		pushOpts.Bridge, adminOpts.Bridge = n.Bridge, n.Bridge
	}
	n.PushURL = serve(pushapi.New(node, pushOpts), nil)
	if opts.Meta != nil {
		var tc *tls.Config
		if opts.TLS != nil {
			adminOpts.TLS = &adminapi.TLS{Node: opts.TLS}
			tc = opts.TLS.HTTPServerConfig()
			n.Client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: opts.TLS.Roots()}}
		}
		n.AdminURL = serve(adminapi.New(node, opts.Meta, adminOpts), tc)
	}
	served := make(chan struct{})
	if RaceEnabled {
		ln := connLis
		listeners = append(listeners, ln)
		n.TCPURL = "tcp://" + ln.Addr().String()
		go func() {
			defer close(served)
			_ = node.Serve(ln)
		}()
		n.HTTPURL = serve(node.HTTPHandler(), nil)
	} else {
		a := node.Addrs()
		n.WSURL, n.TCPURL, n.HTTPURL = "ws://"+a.WS+"/v1/ws", "tcp://"+a.TCP, "http://"+a.WS
		close(served)
	}
	n.stop = func(ctx context.Context) error {
		for _, srv := range servers {
			_ = srv.Shutdown(ctx)
		}
		for _, ln := range listeners {
			_ = ln.Close()
		}
		var berr error
		if n.Bridge != nil {
			berr = n.Bridge.Close(ctx)
		}
		err := errors.Join(berr, node.Shutdown(ctx))
		<-served
		if err != nil {
			return fmt.Errorf("shutdown %s: %w", node.ID(), err)
		}
		return nil
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	select {
	case <-node.Ready():
	case <-time.After(30 * time.Second):
		t.Fatalf("node %s not ready 30 s after its start", node.ID())
	}
	return n
}

// Region is a region in the test process: real Raft over loopback TCP
// (raftmetatest's fast timings), a real Redis (one redis-server, or the
// cluster PUSHD_TEST_REDIS asks for), and a node with both APIs on each
// Raft node, registered in the member list as pushd registers itself.
type Region struct {
	Redis streamstest.Redis
	Raft  *raftmetatest.Cluster
	Nodes []*Node
	// Admin is an admin-role token with the id "root"; Viewer a
	// viewer-role token with the id "watcher".
	Admin, Viewer string

	opts RegionOptions
}

// RegionOptions configure a region.
type RegionOptions struct {
	// Config changes node i's configuration (its NodeID is set already).
	Config func(i int, cfg *appliance.Config)
	// Streams configures every node's store. Zero: streams' defaults.
	Streams streams.Config
	// Raft changes how the Raft cluster is built.
	Raft []raftmetatest.Option
	// Commands are applied before the nodes start (apps, say).
	Commands []raftmeta.Command
	// TLS serves the admin APIs over HTTPS with the nodes' Raft
	// certificates, node 0 keeping the CA key (see the package doc).
	TLS bool
	// Bridge, when set, builds node i's bridge (Options.Bridge).
	Bridge func(i int, node *appliance.Node) (*bridge.Bridge, error)
	// Redis starts the region's Redis. Zero: streamstest.Start (one
	// redis-server, or a cluster under PUSHD_TEST_REDIS=cluster).
	Redis func(t testing.TB) streamstest.Redis
}

// StartRegion starts a region of size nodes and stops it with the test.
func StartRegion(t testing.TB, size int, opts RegionOptions) *Region {
	t.Helper()
	start := opts.Redis
	if start == nil {
		start = func(t testing.TB) streamstest.Redis { return streamstest.Start(t) }
	}
	r := &Region{Redis: start(t), Raft: raftmetatest.NewCluster(t, size, opts.Raft...), opts: opts}
	if opts.TLS {
		first := r.Raft.TLS(0)
		if first == nil {
			t.Fatal("appliancetest: RegionOptions.TLS needs the Raft cluster's TLS (no raftmetatest.WithPlaintext)")
		}
		if err := r.Raft.CA().Save(first.Dir()); err != nil {
			t.Fatal(err)
		}
		if err := first.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	var at, vt raftmeta.AdminToken
	r.Admin, at = raftmeta.NewAdminToken("root", raftmeta.RoleAdmin)
	r.Viewer, vt = raftmeta.NewAdminToken("watcher", raftmeta.RoleViewer)
	for _, cmd := range append([]raftmeta.Command{raftmeta.CreateAdminToken(at), raftmeta.CreateAdminToken(vt)}, opts.Commands...) {
		if _, err := r.Raft.Apply(context.Background(), cmd); err != nil {
			t.Fatal(err)
		}
	}
	for i := range size {
		r.Nodes = append(r.Nodes, r.startNode(t, i))
	}
	// Stop the nodes together: a node's stop takes 200–300 ms here, which
	// one cleanup after another would add up.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for _, n := range r.Nodes {
			// Each node's own cleanup, which runs next, reports its error.
			wg.Go(func() { _ = n.Stop(ctx) })
		}
		wg.Wait()
	})
	// Every node must know every member's addresses before a test asks
	// it for status or writes through it, and every other node as alive
	// before it takes a group push, which reaches the nodes it knows.
	r.Raft.WaitConverged(t)
	poll.Until(t, 10*time.Second, func() error {
		for _, n := range r.Nodes {
			if live := n.LiveNodes(); len(live) != size {
				return fmt.Errorf("node %s knows %d live nodes (%v) of %d", n.ID(), len(live), live, size)
			}
		}
		return nil
	})
	return r
}

// startNode starts the node on Raft node i and records its addresses in
// its member record.
func (r *Region) startNode(t testing.TB, i int) *Node {
	t.Helper()
	cfg := TestConfig()
	cfg.NodeID = r.Raft.Member(i).ID
	if r.opts.Config != nil {
		r.opts.Config(i, &cfg)
	}
	o := Options{Config: cfg, Store: streams.New(r.Redis.Connect(t), r.opts.Streams), Meta: r.Raft.Store(i)}
	if r.opts.TLS {
		o.TLS = r.Raft.TLS(i)
	}
	if r.opts.Bridge != nil {
		o.Bridge = func(node *appliance.Node) (*bridge.Bridge, error) { return r.opts.Bridge(i, node) }
	}
	n := Start(t, o)
	var m raftmeta.Member
	poll.Until(t, 10*time.Second, func() error {
		var ok bool
		if m, ok = r.Raft.Store(i).State().Members[cfg.NodeID]; !ok {
			return fmt.Errorf("node %s has not caught up with its own member record", cfg.NodeID)
		}
		return nil
	})
	m.AdminAddr, m.PushAddr = hostPort(n.AdminURL), hostPort(n.PushURL)
	m.DeviceAddr, m.TCPAddr, m.Weight = n.WSURL, n.TCPURL, 100
	if m.DeviceAddr == "" {
		m.DeviceAddr = n.TCPURL
	}
	if _, err := r.Raft.Apply(context.Background(), raftmeta.UpsertMember(m)); err != nil {
		t.Fatal(err)
	}
	return n
}

// Kill stops node i (Node.Stop) and then kills its Raft node, which
// does not leave the region: the others see a crashed process.
func (r *Region) Kill(t testing.TB, i int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Nodes[i].Stop(ctx); err != nil {
		t.Error(err)
	}
	r.Raft.Kill(i)
}

// Restart starts node i again after Kill, as its process restarted: its
// Raft node on the same data directory and address, and a new node with
// its APIs over it, ready and recorded in its member record. It replaces
// r.Nodes[i] and returns it.
func (r *Region) Restart(t testing.TB, i int) *Node {
	t.Helper()
	r.Raft.Restart(t, i)
	r.Nodes[i] = r.startNode(t, i)
	return r.Nodes[i]
}

// LeaderIndex waits for a Raft leader and returns its index.
func (r *Region) LeaderIndex(t testing.TB) int {
	t.Helper()
	i, _ := r.Raft.WaitForLeader(t)
	return i
}

// hostPort strips the scheme from an http(s)://host:port URL.
func hostPort(url string) string {
	return strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://")
}
