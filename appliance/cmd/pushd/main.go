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

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/logging"
	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance"
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
		if _, err := opts.nodeConfig(); err != nil {
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
	log := newLogger(opts.LogLevel, opts.LogFormat)
	logging.SetLevel(logging.LevelError)
	redis.SetLogger(redisLogger{log.With("component", "redis")})
	raiseFileLimit(log)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(opts.GCPercent)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// The narrative of a start: dev mode brings its own Redis; the
	// region's Redis is reached and checked before anything changes on
	// this host; the Raft metadata store opens (and bootstraps a new
	// region); the node starts listening; it registers itself as a
	// member; dev mode seeds its app; the node's metadata catches up with
	// the region's; systemd hears READY once all of that holds.
	var dev *devRegion
	if opts.Dev {
		if dev, err = startDevRegion(ctx, &opts, log); err != nil {
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

	meta, err := openMeta(ctx, &opts, log)
	if err != nil {
		return err
	}
	defer meta.Close()

	node, err := appliance.New(cfg, appliance.Deps{Logger: log, Store: store, Meta: meta})
	if err != nil {
		return usageError{err}
	}
	apis, err := listenAPIs(&opts)
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
	apis.serve(node, meta, br, log)
	defer func() {
		// The APIs stop taking calls first, then the bridge hands Kafka
		// what it buffered and commits what it imported, then the node
		// drains.
		sctx, cancel := context.WithTimeout(context.Background(), opts.DrainTimeout)
		defer cancel()
		apis.shutdown(sctx)
		if br != nil {
			if err := br.Close(sctx); err != nil {
				log.Error("bridge", "err", err)
			}
		}
		_ = node.Shutdown(sctx)
	}()
	if err := register(ctx, &opts, meta, node, apis, log); err != nil {
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
		if err := dev.announce(node, apis, adminToken); err != nil {
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
	log.Info("shutting down")
	notifyStopping(log)
	return nil
}

func newLogger(level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	ho := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, ho))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, ho))
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
