package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/streams"
)

// Deps are the node's collaborators, built by the caller.
type Deps struct {
	// Logger receives structured logs. Zero: discard.
	Logger *slog.Logger
	// Registry is where the node registers its metrics; /metrics serves
	// it. Zero: a new registry with the Go and process collectors.
	Registry *prometheus.Registry
	// Store is the region's Redis (streams.Store). Zero: the node holds
	// sessions and fan-out only, and pushes are delivered at most once to
	// devices connected to it.
	Store Store
	// Meta is the region's Raft metadata (raftmeta.Store). Zero: apps come
	// from Config.Apps, and there is no admin API, degrade or dispatch by
	// membership.
	Meta Meta
}

// Node is one pushd process: device listeners, the session hub, and the
// timers and flushers behind them. Create it with New, start it with Start
// (or Run), stop it with Shutdown. Its methods are safe for concurrent use.
type Node struct {
	cfg     Config
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics

	hub        *hub
	fanouts    fanoutLines
	wheels     []*wheel
	wheelNext  atomic.Uint64
	sessionSeq atomic.Uint64
	apps       atomic.Pointer[appTable]
	limiter    *ipLimiter // nil: no per-IP connect limit
	upstream   *upstream
	conns      [transportKindCount]atomic.Int64
	now        atomic.Int64 // coarse clock, unix nanos, advanced by the wheels

	trace *tracer // nil: tracing off

	deviceErrors logLimiter // the log of devices' ERROR frames
	cursorAhead  logLimiter // the log of resume cursors ahead of their inbox

	durable *durable // nil without a Store
	meta    Meta     // nil without Raft metadata

	tun       atomic.Pointer[tunables]
	degrade   atomic.Pointer[degradePolicy] // nil: not degraded
	draining  atomic.Bool
	liveNodes atomic.Pointer[[]streams.NodeInfo]

	// ready is set, and readyCh closed, once the node's metadata holds
	// everything the region had committed when it started (at once
	// without a Meta): until then it takes no device and no push, and
	// /healthz and its heartbeat say it is starting.
	ready   atomic.Bool
	readyCh chan struct{}
	// stopping is set when Shutdown begins.
	stopping atomic.Bool
	// rechecks are handshakes that named an app, token key or business
	// this node did not know, waiting for the metadata to be synced.
	rechecks chan openJob

	ws  *nbhttp.Engine // nil without WSAddr
	tcp *nbio.Engine   // nil without TCPAddr

	// ctx is cancelled when the node shuts down: the loops' Redis calls
	// and webhook calls use it, so none holds shutdown up.
	ctx      context.Context
	cancel   context.CancelFunc
	stop     chan struct{}
	wg       sync.WaitGroup
	started  atomic.Bool
	stopOnce sync.Once
}

// ErrStarted is returned by Start on a node that was started before.
var ErrStarted = errors.New("node already started")

// New validates cfg and builds a node. It opens no socket; Start does.
func New(cfg Config, deps Deps) (*Node, error) {
	if deps.Store != nil {
		// Inbox bounds follow the store's unless the node sets its own.
		sc := deps.Store.Config()
		if cfg.InboxMaxLen == 0 {
			cfg.InboxMaxLen = sc.InboxMaxLen
		}
		if cfg.MaxTTL == 0 {
			cfg.MaxTTL = sc.InboxTTL
		}
		if cfg.MaxTTL > sc.InboxTTL {
			// The store would cap such a message silently.
			return nil, fmt.Errorf("%w: max ttl %s is over the store's inbox ttl %s", ErrConfig, cfg.MaxTTL, sc.InboxTTL)
		}
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: deps.Logger, reg: deps.Registry, stop: make(chan struct{}), readyCh: make(chan struct{}),
		rechecks: make(chan openJob, recheckQueueLen)}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	if n.log == nil {
		n.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	n.log = n.log.With("component", "appliance", "node", cfg.NodeID)
	n.trace = newTracer(cfg.NodeID, cfg.TraceMemory, cfg.TraceTTL, n.log.With("component", "trace"))
	if n.reg == nil {
		n.reg = prometheus.NewRegistry()
		n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	n.hub = newHub(cfg.Shards, cfg.FlushInterval)
	now := time.Now()
	n.now.Store(now.UnixNano())
	for i := 0; i < len(n.hub.flushers); i++ {
		n.wheels = append(n.wheels, newWheel(cfg.TimerTick, now))
	}
	n.apps.Store(newAppTable(cfg.Apps))
	if cfg.ConnectRate > 0 {
		n.limiter = newIPLimiter(cfg.ConnectRate, cfg.ConnectBurst)
	}
	n.upstream = newUpstream(cfg.Upstreams, cfg.UpstreamTimeout)
	if deps.Store != nil {
		n.durable = newDurable(n, deps.Store)
	}

	n.metrics = newMetrics(n.reg, n)
	for _, f := range n.hub.flushers {
		f.bytes = n.metrics.bytesOut
	}
	n.tun.Store(n.tunablesFrom(raftmeta.Tunables{}))
	if deps.Meta != nil {
		n.meta = deps.Meta
		n.applyMeta(n.meta.State())
	} else {
		n.markReady() // nothing to catch up with
	}
	return n, nil
}

// ID is the node's id in the region.
func (n *Node) ID() string { return n.cfg.NodeID }

// Addrs are the bound device listener addresses; empty when not
// listening.
type Addrs struct {
	WS  string // host:port serving /v1/ws, /v1/dispatch, /healthz and /metrics
	TCP string
}

// Addrs returns where the node listens. Valid after Start.
func (n *Node) Addrs() Addrs {
	var a Addrs
	if n.ws != nil {
		if n.cfg.TLS != nil {
			a.WS = n.ws.AddrsTLS[0]
		} else {
			a.WS = n.ws.Addrs[0]
		}
	}
	if n.tcp != nil {
		a.TCP = n.tcp.Addrs[0]
	}
	return a
}

// advertisedWS is the WebSocket URL devices are given for this node.
func (n *Node) advertisedWS(a Addrs) string {
	host := n.cfg.AdvertiseWS
	if host == "" {
		host = a.WS
	}
	if host == "" {
		return ""
	}
	scheme := "ws://"
	if n.cfg.TLS != nil {
		scheme = "wss://"
	}
	return scheme + host + "/v1/ws"
}

// advertisedTCP is the raw TCP URL devices are given for this node.
func (n *Node) advertisedTCP(a Addrs) string {
	host := n.cfg.AdvertiseTCP
	if host == "" {
		host = a.TCP
	}
	if host == "" {
		return ""
	}
	if n.cfg.TLS != nil {
		return "tls://" + host
	}
	return "tcp://" + host
}

// Start opens the device listeners and starts the node's goroutines. It
// returns once the node accepts connections; with region metadata it
// takes devices and pushes only once Ready is closed. The push and admin
// APIs are served by their own packages (appliance/pushapi,
// appliance/adminapi) over the node's core, on listeners the caller owns.
func (n *Node) Start() error {
	if !n.started.CompareAndSwap(false, true) {
		return ErrStarted
	}
	n.startLoops()
	if n.durable != nil {
		if err := n.durable.start(); err != nil {
			n.stopGoroutines()
			return fmt.Errorf("set up delivery stream: %w", err)
		}
	}
	if n.cfg.WSAddr != "" {
		n.ws = n.newWSEngine(n.devicePortMux())
		if err := n.ws.Start(); err != nil {
			n.ws = nil
			n.stopGoroutines()
			return fmt.Errorf("listen ws %s: %w", n.cfg.WSAddr, err)
		}
	}
	if n.cfg.TCPAddr != "" {
		n.tcp = n.newTCPEngine()
		if err := n.tcp.Start(); err != nil {
			n.tcp = nil
			n.stopListeners()
			n.stopGoroutines()
			return fmt.Errorf("listen tcp %s: %w", n.cfg.TCPAddr, err)
		}
	}
	if n.durable != nil {
		// Other nodes learn this one's addresses from its heartbeat:
		// publish them as soon as they are bound.
		if _, _, err := n.durable.heartbeat(); err != nil {
			n.stopListeners()
			n.stopGoroutines()
			return fmt.Errorf("publish heartbeat: %w", err)
		}
	}
	a := n.Addrs()
	n.log.Info("listening", "ws", a.WS, "tcp", a.TCP, "tls", n.cfg.TLS != nil, "store", n.durable != nil)
	if n.meta != nil {
		n.goOwned(n.awaitReady)
	}
	return nil
}

// Ready is closed once the node takes devices and pushes: at once without
// region metadata, otherwise once its metadata caught up (awaitReady).
func (n *Node) Ready() <-chan struct{} { return n.readyCh }

// awaitReady syncs the node's metadata with the region's (raftmeta's read
// index: everything committed when it began) and then marks the node
// ready. A restarted node's Raft state is empty or old until the leader
// has told it what is committed; serving meanwhile would refuse valid API
// keys, admin tokens and devices of apps it has not replayed yet.
func (n *Node) awaitReady() {
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		err := n.meta.Sync(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-n.stop:
			return
		default:
		}
		n.log.Info("waiting for the region's metadata before taking devices and pushes", "err", err)
	}
	n.markReady()
	n.log.Info("ready: region metadata caught up", "after", time.Since(start).Round(time.Millisecond))
	if n.durable != nil {
		// Dispatch learns from the heartbeat that this node takes devices.
		_, _, _ = n.durable.heartbeat()
	}
}

func (n *Node) markReady() {
	if !n.ready.Swap(true) {
		close(n.readyCh)
	}
}

// refusal says why the node takes no new devices right now, for its
// heartbeat (dispatch skips such nodes); "" while it takes them.
func (n *Node) refusal() string {
	switch {
	case n.stopping.Load():
		return "stopping"
	case !n.ready.Load():
		return "starting"
	case n.draining.Load():
		return "draining"
	case n.connCount() >= int64(n.cfg.MaxConns):
		return "full"
	}
	return ""
}

// connCount is the number of open device connections, sessions or not.
func (n *Node) connCount() int64 {
	total := int64(0)
	for i := range n.conns {
		total += n.conns[i].Load()
	}
	return total
}

// HTTPHandler serves the device port's plain HTTP: /healthz,
// /v1/dispatch and /metrics, which the WebSocket listener serves beside
// /v1/ws. It is exported for a node without its own listeners (see
// ServeConn).
func (n *Node) HTTPHandler() http.Handler { return n.devicePortMux() }

// devicePortMux routes the device port's plain HTTP, Config.DeviceHandler
// taking every other path.
func (n *Node) devicePortMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", n.ServeHealth)
	mux.HandleFunc("/v1/dispatch", n.serveDispatch)
	mux.Handle("/metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	if n.cfg.DeviceHandler != nil {
		mux.Handle("/", n.cfg.DeviceHandler)
	}
	return mux
}

// stopListeners closes the device listeners and their connections.
func (n *Node) stopListeners() {
	if n.tcp != nil {
		n.tcp.Stop()
	}
	if n.ws != nil {
		n.ws.Stop()
	}
}

// startLoops starts the goroutines that need no listener: timing wheels,
// flushers, housekeeping and upstream workers.
func (n *Node) startLoops() {
	for _, w := range n.wheels {
		n.goOwned(func() { n.runWheel(w) })
	}
	for _, f := range n.hub.flushers {
		n.goOwned(func() { f.run(n.stop) })
	}
	if n.limiter != nil {
		n.goOwned(n.sweepLimiter)
	}
	n.upstream.start(n, n.cfg.Upstreams)
	if n.meta != nil {
		n.goOwned(n.watchMeta)
		for i := 0; i < recheckWorkers; i++ {
			n.goOwned(n.recheckLoop)
		}
	}
}

// Run starts the node and serves until ctx is done, then shuts down,
// giving the drain up to the handshake timeout.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), n.cfg.HandshakeTimeout)
	defer cancel()
	return n.Shutdown(sctx)
}

// Shutdown stops the node within ctx. It refuses new sessions, sends its
// devices to other nodes in paced batches (CONTROL drain, over
// DrainSpread or half of what ctx leaves: drain.go), closes the
// listeners, stops its goroutines, writes the acks and route releases
// they left, and hands its delivery stream over: what other nodes wrote
// to it is passed on, and the region takes the node for gone at once.
// It returns ctx's error if ctx ends first.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.stopOnce.Do(func() {
		n.stopping.Store(true)
		if n.durable != nil && n.started.Load() {
			// Tell dispatch at once that this node takes no more devices,
			// rather than when its heartbeat expires.
			_, _, _ = n.durable.heartbeat()
		}
		n.drainForShutdown(ctx)
		n.stopListeners()
		done := make(chan struct{})
		go func() {
			n.stopGoroutines()
			if n.durable != nil {
				n.durable.flush(ctx)
				if n.started.Load() {
					n.durable.handOver(ctx)
				}
			}
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	})
	return err
}

func (n *Node) stopGoroutines() {
	close(n.stop)
	n.cancel()
	n.wg.Wait()
}

// goOwned runs f on a goroutine the node waits for at shutdown.
func (n *Node) goOwned(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

func (n *Node) runWheel(w *wheel) {
	t := time.NewTicker(w.tick)
	defer t.Stop()
	var fired []*session
	for {
		select {
		case <-n.stop:
			return
		case now := <-t.C:
			n.now.Store(now.UnixNano())
			fired = w.advance(now, fired[:0])
			for _, s := range fired {
				s.onTimer(now)
			}
			clear(fired)
		}
	}
}

func (n *Node) sweepLimiter() {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case now := <-t.C:
			n.limiter.sweep(now)
		}
	}
}

// coarseNow is the wheel-tick clock: cheap enough to stamp every inbound
// frame.
func (n *Node) coarseNow() int64 { return n.now.Load() }

// admit decides whether a new device connection from addr may proceed. A
// refusal is counted in pushd_connects_refused_total and returned as the
// answer a WebSocket upgrade gets; TCP closes the connection instead.
func (n *Node) admit(addr string) *api.APIError {
	if n.limiter != nil && !n.limiter.allow(addr, time.Now()) {
		n.metrics.refused.WithLabelValues(wire.CodeRateLimited.String()).Inc()
		return &api.APIError{Status: http.StatusTooManyRequests, Code: wire.CodeRateLimited.String(),
			Message: "too many connections from this address", RetryAfter: time.Second}
	}
	if n.atCapacity() {
		n.metrics.refused.WithLabelValues("capacity").Inc()
		return &api.APIError{Status: http.StatusServiceUnavailable, Code: "at_capacity",
			Message: "node at connection capacity", RetryAfter: capacityRetryAfter}
	}
	return nil
}

// capacityRetryAfter is the Retry-After of an upgrade refused at
// capacity.
const capacityRetryAfter = 5 * time.Second

// atCapacity reports whether the node holds MaxConns device connections.
func (n *Node) atCapacity() bool { return n.connCount() >= int64(n.cfg.MaxConns) }

// originAllowed implements the browser Origin allowlist for WebSocket
// upgrades. Native clients send no Origin and pass.
func (n *Node) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || len(n.cfg.AllowedOrigins) == 0 {
		return true
	}
	for _, o := range n.cfg.AllowedOrigins {
		if strings.EqualFold(o, origin) {
			return true
		}
	}
	n.metrics.refused.WithLabelValues(wire.CodeOriginForbidden.String()).Inc()
	return false
}

// ServeHealth answers 200 while the node can store pushes, and 503 while
// it is starting (its metadata not caught up yet) or Redis is
// unreachable, saying since when. A node at capacity is healthy:
// at_capacity says it takes no new device now.
// It is served on the device port and on both APIs' listeners.
func (n *Node) ServeHealth(w http.ResponseWriter, _ *http.Request) {
	if !n.ready.Load() {
		api.WriteJSON(w, http.StatusServiceUnavailable, api.Health{Status: "starting", Reason: "region metadata not caught up yet", AtCapacity: n.atCapacity()})
		return
	}
	if n.RedisUp() {
		api.WriteJSON(w, http.StatusOK, api.Health{Status: "ok", AtCapacity: n.atCapacity()})
		return
	}
	since := time.Unix(0, n.durable.since.Load()).UTC().Format(time.RFC3339)
	api.WriteJSON(w, http.StatusServiceUnavailable, api.Health{Status: "degraded", Redis: "unreachable", Since: since, AtCapacity: n.atCapacity()})
}
