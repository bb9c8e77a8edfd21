// Command pushd runs one node of a pushd region: device listeners
// (WebSocket and raw TCP), the push API, and the delivery machinery over
// the region's Redis.
//
//	pushd --redis redis://10.0.0.5:6379 --node-id bj-1 ...
//	pushd --dev      # a one-node region on localhost with its own redis-server
//
// Every flag can also be set through the environment (PUSHD_<FLAG>, dashes
// as underscores) or a JSON file given with --config; flags win over the
// environment, which wins over the file.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/logging"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/bridge"
	"github.com/pushd/pushd/internal/asynclog"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/regiontls"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/redisurl"
)

func main() { os.Exit(runCLI(os.Args, os.Stdout, os.Stderr)) }

// runCLI runs pushd with args and returns its exit status: 0 after a
// clean shutdown, 1 on a failure, 2 on a configuration mistake.
func runCLI(args []string, stdout, stderr io.Writer) int {
	app := &cli.App{
		Name:            "pushd",
		Usage:           "a region push appliance node",
		Flags:           flags(),
		Action:          run,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {},
	}
	if err := app.Run(args); err != nil {
		fmt.Fprintln(stderr, "pushd:", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

// usageError is a configuration mistake: exit status 2.
type usageError struct{ error }

func run(c *cli.Context) error {
	opts, err := loadOptions(c)
	if err != nil {
		return usageError{err}
	}
	if c.Bool("check-config") {
		if err := opts.check(); err != nil {
			return usageError{err}
		}
		fmt.Fprintf(c.App.Writer, "configuration ok: node %s of region %s, data dir %s, redis %s\n", opts.NodeID, opts.Region, opts.DataDir, opts.redis)
		if opts.bridged() {
			bc, err := opts.bridgeConfig([]string{opts.DevKafka})
			if err == nil {
				err = bc.Validate(opts.Region)
			}
			if err != nil {
				return usageError{err}
			}
			brokers := opts.BridgeBrokers
			if len(brokers) == 0 {
				brokers = []string{opts.DevKafka + " (embedded)"}
			}
			fmt.Fprintf(c.App.Writer, "bridge to %s through %s\n", strings.Join(opts.BridgePeers, ", "), strings.Join(brokers, ", "))
		}
		return nil
	}
	log, logs := newLogger(opts.LogLevel, opts.LogFormat)
	// Closed last: every line logged up to the exit is written.
	defer logs.Close()
	logging.SetLevel(logging.LevelError)
	redis.SetLogger(redisLogger{log.With("component", "redis")})
	raiseFileLimit(log)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(opts.GCPercent)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// The narrative of a start: the node's certificates for Raft and the
	// admin API are loaded, or made on the region's first node, or fetched
	// with the join token (Redis asks for them when it runs TLS; on a
	// first start they are the one thing written before Redis is
	// checked); dev mode brings its own Redis; the region's Redis is
	// reached and checked, pushd's credentials included, before anything
	// else changes on this host; the Raft metadata store opens (and bootstraps a new region);
	// the node starts listening; it registers itself as a member; dev
	// mode seeds its app; the node's metadata catches up with the
	// region's; systemd hears READY once all of that holds.
	var rt *regiontls.Node
	if opts.regionTLS() {
		if rt, err = setupRegionTLS(ctx, &opts, log); err != nil {
			return err
		}
	} else if !opts.Dev {
		log.Error("--insecure-plaintext: Raft and the admin API run WITHOUT TLS: anyone who reaches their ports can take part in Raft, "+
			"and read every app's token secrets and the admin tokens on the wire; only for a network you trust entirely",
			"raft_addr", opts.RaftAddr, "admin_addr", opts.AdminAddr)
	}
	var dev *devRegion
	if opts.Dev {
		if dev, err = startDevRegion(ctx, &opts, rt, log); err != nil {
			return err
		}
		defer dev.stop()
	}
	var devBrokers []string
	if opts.DevKafka != "" {
		if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		kafka, err := startDevKafka(opts.DevKafka, opts.DataDir, log)
		if err != nil {
			return err
		}
		// Closed after the node (deferred first, run last): the bridge
		// flushes into it on the way down.
		defer kafka.Close()
		devBrokers = kafka.ListenAddrs()
		dev.kafka = devBrokers[0]
	}
	cfg, err := opts.nodeConfig()
	if err != nil {
		return usageError{err}
	}
	if dev != nil {
		cfg.DeviceHandler = dev.pageHandler(log)
	}
	if err := opts.redis.credentials(&opts, rt); err != nil {
		return usageError{err}
	}
	// The one client for every topology (redisurl).
	rdb := redisurl.NewClient(opts.redis.url)
	defer rdb.Close()
	store := streams.New(rdb, opts.streamsConfig())
	if err := checkRedis(ctx, store, opts.redis, log); err != nil {
		return err
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}

	meta, err := openMeta(ctx, &opts, rt, log)
	if err != nil {
		return err
	}
	defer meta.Close()

	node, err := appliance.New(cfg, appliance.Deps{Logger: log, Store: store, Meta: meta})
	if err != nil {
		return usageError{err}
	}
	node.Registry().MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "pushd_log_dropped_total",
		Help: "Log records dropped because the log queue was full (the output could not keep up); the log says so too.",
	}, func() float64 { return float64(logs.Dropped()) }))
	var push *keyPair
	if opts.PushTLSCert != "" {
		if push, err = loadKeyPair(opts.PushTLSCert, opts.PushTLSKey); err != nil {
			return usageError{fmt.Errorf("--push-tls-cert/--push-tls-key: %w", err)}
		}
	}
	registerCertMetrics(node.Registry(), rt, push)
	apis, err := listenAPIs(&opts, rt, push)
	if err != nil {
		return err
	}
	if err := node.Start(); err != nil {
		apis.shutdown(context.Background())
		return err
	}
	br, err := startBridge(&opts, node, devBrokers, log)
	if err != nil {
		apis.shutdown(context.Background())
		_ = node.Shutdown(context.Background())
		return err
	}
	apis.serve(node, meta, rt, opts.certNames(), br, log)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	rctx, stopReload := context.WithCancel(ctx)
	reloaded := watchReload(rctx, hup, rt, push, log)
	defer func() {
		stopReload()
		<-reloaded
		signal.Stop(hup)
	}()
	defer shutdown(&opts, meta, apis, br, node, log)
	if err := register(ctx, &opts, meta, node, apis, rt, log); err != nil {
		return err
	}
	adminToken := ""
	if opts.Bootstrap || opts.Dev {
		if adminToken, err = ensureAdminToken(ctx, &opts, meta, log); err != nil {
			return err
		}
	}
	if dev != nil {
		if err := dev.seedApp(ctx, meta); err != nil {
			return err
		}
		if err := dev.announce(node, apis, adminToken, opts.TLSCert); err != nil {
			log.Error("write dev region info", "err", err)
		}
	}
	// Ready only once the node's metadata holds what the region had
	// committed: a node serving before that refuses valid keys and apps.
	select {
	case <-node.Ready():
	case <-ctx.Done():
		return nil
	}
	notifyReady(log)
	<-ctx.Done()
	notifyStopping(log)
	return nil
}

// shutdown stops the node within --drain-timeout, less than the unit's
// TimeoutStopSec: it hands Raft leadership to another voter (writes wait
// for a hand-over instead of an election), stops taking API calls (the
// callers retry on other nodes), closes the bridge, and drains the node:
// its devices go to the other nodes in paced batches over --drain-spread,
// and what is left in its delivery stream is passed on. Raft and Redis close afterwards,
// in run's deferred calls.
func shutdown(o *options, meta *raftmeta.Store, apis *apiServers, br *bridge.Bridge, node *appliance.Node, log *slog.Logger) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), o.DrainTimeout)
	defer cancel()
	log.Info("shutting down", "sessions", node.Sessions(), "drain_spread", o.DrainSpread, "deadline", o.DrainTimeout)
	if meta.IsLeader() {
		tctx, tcancel := context.WithTimeout(ctx, 3*time.Second)
		if err := meta.TransferLeadership(tctx); err != nil {
			log.Info("kept raft leadership while stopping: the region elects a new leader once this node is gone", "err", err)
		} else {
			log.Info("handed raft leadership to another voter")
		}
		tcancel()
	}
	actx, acancel := context.WithTimeout(ctx, 3*time.Second)
	apis.shutdown(actx)
	acancel()
	// The bridge hands Kafka what it buffered and commits what it
	// imported once no API call can export more.
	if br != nil {
		if err := br.Close(ctx); err != nil {
			log.Error("bridge", "err", err)
		}
	}
	if err := node.Shutdown(ctx); err != nil {
		log.Warn("shutdown cut short by --drain-timeout", "err", err)
	}
	log.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
}

// newLogger returns the logger and its asynchronous sink: logging never
// waits for stderr (journald), and what a full queue drops is counted.
func newLogger(level, format string) (*slog.Logger, *asynclog.Sink) {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	sink := asynclog.New(os.Stderr, asynclog.Options{Level: lv, JSON: format == "json"})
	return slog.New(sink.Handler()), sink
}

// redisLogger routes go-redis's own messages (reconnect attempts) to slog.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...))
}

// raiseFileLimit lifts the soft open-file limit to the hard one, since
// every device connection is a file, and sizes nbio's connection table to
// match instead of its 2M-entry default.
func raiseFileLimit(log *slog.Logger) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			log.Warn("could not raise the open-file limit", "err", err)
		}
	}
	if rl.Cur > 0 && rl.Cur < uint64(nbio.MaxOpenFiles) {
		nbio.MaxOpenFiles = int(rl.Cur)
	}
	log.Info("open-file limit", "limit", rl.Cur)
}
