package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/ctl/load"
)

func benchBridgeCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "bridge",
		Usage: "push through one region to devices held in another, through the Kafka bridge, and measure rate, latency and loss",
		Description: "Devices are held connected to the devices' region (--to, a pushctl.json of that region) by worker\n" +
			"processes with the Go SDK, which receive, dedupe and ack; the pushes go to this region's push API (the\n" +
			"usual settings) with \"regions\": [--region], and count as accepted when the answer says queued for it.\n" +
			"Each payload carries its send time, so each receipt yields the push→device latency across the bridge.\n" +
			"At the end pushctl waits until each device's ack cursor in its region covers what it was sent, then\n" +
			"counts lost and duplicate messages. --local starts two throwaway regions, bj (with an embedded Kafka)\n" +
			"and sh, each a pushd --dev with its own redis-server, and pushes through bj to devices in sh.\n" +
			"Exits 1 when anything was lost, duplicated, refused or left unacked.",
		Flags: append(append(append([]cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "pushctl.json of the devices' region: its device URL, app credentials and push API (not with --local)", TakesFile: true},
			&cli.StringFlag{Name: "region", Usage: "the devices' region, as the pushes name it (default: \"region\" in --to)"},
			&cli.DurationFlag{Name: "wait", Usage: "how long to wait at the end for acks", Value: 30 * time.Second},
			&cli.IntFlag{Name: "workers", Usage: "worker processes holding the connections (default: one per 15,000)"},
			&cli.StringFlag{Name: "transport", Usage: "ws or tcp: which URL of --to the devices use", Value: "ws"},
			&cli.StringFlag{Name: "sources", Usage: "comma-separated local addresses, one per worker in turn (default for a loopback target: 127.0.0.2, 127.0.0.3, …)"},
			&cli.BoolFlag{Name: "local", Usage: "start two throwaway regions (bj with an embedded Kafka, and sh) for the run and stop them after"},
			&cli.StringFlag{Name: "pushd", Usage: "pushd binary for --local (default: next to pushctl, else on PATH)", TakesFile: true},
		}, pushLoadFlags()...), settingFlags(setPushURL, setApp, setAPIKey)...), outputFlags()...),
		Action: func(c *cli.Context) error { return runBenchBridge(c, e) },
	}
}

func runBenchBridge(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if c.NArg() > 0 {
		return usagef("unexpected arguments %q", c.Args().Slice())
	}
	push, err := pushLoadFromFlags(c)
	if err != nil {
		return err
	}
	transport := c.String("transport")
	if transport != "ws" && transport != "tcp" {
		return usagef("--transport %q: want ws or tcp", transport)
	}
	local, to := c.Bool("local"), c.String("to")
	switch {
	case local && to != "":
		return usagef("--to and --local exclude each other: --local uses the regions it starts")
	case !local && to == "":
		return usagef("missing --to: the pushctl.json of the region the devices connect to (or --local)")
	}
	plan, err := benchPlan(c, e, format)
	if err != nil {
		return err
	}
	k, err := loadConfig(c, e)
	if err != nil {
		return err
	}
	var dest fileConfig
	if local {
		origin, devices, err := startLocalRegions(c, e)
		if err != nil {
			return err
		}
		defer stopLocal(e, devices)
		defer stopLocal(e, origin)
		if k.override, err = readFileConfig(origin.ConfigFile); err != nil {
			return err
		}
		f, err := readFileConfig(devices.ConfigFile)
		if err != nil {
			return err
		}
		dest = *f
	} else {
		f, err := readFileConfig(to)
		if err != nil {
			return usagef("--to: %v", err)
		}
		dest = *f
	}
	run := load.Bridge{Push: push, Region: c.String("region")}
	if run.Region == "" {
		run.Region = dest.Region
	}
	if run.Region == "" {
		return usagef("missing --region: the devices' region, as the pushes name it (%s names none)", to)
	}
	run.Target = load.Target{URL: dest.WSURL, App: dest.App, KeyID: dest.KeyID}
	if transport == "tcp" {
		run.Target.URL = dest.TCPURL
	}
	if run.Target.Secret, err = decodeSecret(dest.SecretBase64); err != nil {
		return usagef("--to: secret_base64: %v", err)
	}
	app, err := k.require(setApp)
	if err != nil {
		return err
	}
	if app != dest.App {
		return usagef("app %q here and %q in the devices' region: a push reaches the app of the same id", app, dest.App)
	}
	if run.API, err = pushClient(k, run.Concurrency); err != nil {
		return err
	}
	tc, err := k.tlsConfig()
	if err != nil {
		return err
	}
	if run.Remote, err = api.NewClient(dest.PushURL, dest.APIKey, httpClient(run.Concurrency, tc)); err != nil {
		return usagef("--to: push_url: %v", err)
	}
	rep, err := run.Run(c.Context, plan)
	if rep == nil {
		return benchError(err)
	}
	if err := printPushReport(e.stdout, format, rep); err != nil {
		return err
	}
	if err != nil {
		return err
	}
	if rep.Lost+rep.Duplicates+rep.Errors+rep.Unacked > 0 {
		fmt.Fprintf(e.stderr, "pushctl bench bridge: %d lost, %d duplicates, %d errors, %d unacked", rep.Lost, rep.Duplicates, rep.Errors, rep.Unacked)
		if len(rep.ErrorReasons) > 0 {
			fmt.Fprintf(e.stderr, ": %s", rep.ErrorReasons)
		}
		fmt.Fprintln(e.stderr)
		return errReported
	}
	return nil
}

// startLocalRegions starts --local's two regions: bj, which runs the
// embedded Kafka, and sh, bridged to it.
func startLocalRegions(c *cli.Context, e *env) (origin, devices *load.Local, err error) {
	bin := c.String("pushd")
	origin, err = load.StartLocal(c.Context, bin, "--region", "bj", "--dev-kafka", "127.0.0.1:0", "--bridge-peers", "sh")
	if errors.Is(err, load.ErrNoPushd) {
		return nil, nil, usagef("--local: no pushd binary next to pushctl or on PATH; build one (go build -o bin/pushd ./appliance/cmd/pushd) or pass --pushd")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--local: region bj: %w", err)
	}
	fmt.Fprintf(e.stderr, "pushctl bench: started region bj: %s (pid %d) in %s, Kafka on %s\n", origin.Bin, origin.PID(), origin.Dir, origin.KafkaAddr)
	if origin.KafkaAddr == "" {
		stopLocal(e, origin)
		return nil, nil, fmt.Errorf("--local: %s started no embedded Kafka: is it a pushd of this version?", origin.Bin)
	}
	devices, err = load.StartLocal(c.Context, bin, "--region", "sh", "--bridge-brokers", origin.KafkaAddr, "--bridge-peers", "bj")
	if err != nil {
		stopLocal(e, origin)
		return nil, nil, fmt.Errorf("--local: region sh: %w", err)
	}
	fmt.Fprintf(e.stderr, "pushctl bench: started region sh: %s (pid %d) in %s\n", devices.Bin, devices.PID(), devices.Dir)
	return origin, devices, nil
}

func stopLocal(e *env, l *load.Local) {
	if err := l.Stop(); err != nil {
		fmt.Fprintf(e.stderr, "pushctl bench: %v\n", err)
	}
}

func readFileConfig(path string) (*fileConfig, error) {
	b, err := readLimited(path, maxConfigBytes)
	if err != nil {
		return nil, err
	}
	var f fileConfig
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &f, nil
}
