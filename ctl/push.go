package ctl

import (
	"crypto/tls"
	"net/http"

	"github.com/pushd/pushd/appliance/api"

	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
)

const (
	// ackPollInterval is how often push --wait-ack asks a device's state:
	// short, so the reported latency is close to the real one.
	ackPollInterval = 5 * time.Millisecond
	// ackPollers bounds concurrent device polls.
	ackPollers = 16
	// maxDataFile bounds a payload file; the server's own limit is far
	// below (4 KiB by default, 64 KiB at most), so this only keeps a
	// mistaken path from filling memory.
	maxDataFile = 1 << 20
)

func pushCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "push",
		Usage: "send a message through the push API",
		Description: "POSTs /v1/push and prints the message id and each device's outcome. Exits 1 when any device\n" +
			"was rejected. With --wait-ack it then polls GET /v1/devices/{device} until each delivered or\n" +
			"stored device's ack cursor reaches its sequence number, and prints the end-to-end latency.\n" +
			"With --devices-file it sends the message to every device of the file, --batch devices a\n" +
			"request (one message id per batch), shows its progress on stderr and prints a summary:\n" +
			"devices sent, stored, delivered, rejected by reason, and failed.",
		Flags: append(append([]cli.Flag{
			&cli.StringSliceFlag{Name: "device", Usage: "target device (repeatable)"},
			&cli.StringSliceFlag{Name: "user", Usage: "target every device of a user instead (repeatable)"},
			&cli.StringFlag{Name: "devices-file", Usage: "target every device listed in FILE, one id a line (- for stdin), in batches", TakesFile: true},
			&cli.IntFlag{Name: "batch", Usage: "with --devices-file: devices per request (1-1000)", Value: 1000},
			&cli.IntFlag{Name: "concurrency", Usage: "with --devices-file: requests in flight", Value: 4},
			&cli.StringFlag{Name: "group", Usage: "target every connected member of a group instead"},
			&cli.BoolFlag{Name: "broadcast", Usage: "target every connected device of the app instead"},
			&cli.StringSliceFlag{Name: "filter-platform", Usage: "with --group or --broadcast: only sessions of this platform (repeatable)"},
			&cli.StringSliceFlag{Name: "filter-version", Usage: "with --group or --broadcast: only sessions whose version has this prefix, or is in MIN..MAX (either end may be left out; repeatable)"},
			&cli.StringSliceFlag{Name: "filter-business", Usage: "with --group or --broadcast: only sessions that declared this business (repeatable)"},
			&cli.StringSliceFlag{Name: "filter-tag", Usage: "with --group or --broadcast: only sessions whose token has this tag (repeatable)"},
			&cli.StringFlag{Name: "data", Usage: "payload as text"},
			&cli.StringFlag{Name: "data-base64", Usage: "payload as base64"},
			&cli.StringFlag{Name: "data-file", Usage: "payload read from FILE (- for stdin)", TakesFile: true},
			&cli.StringFlag{Name: "business", Usage: "business id"},
			&cli.StringFlag{Name: "priority", Usage: "high, normal or low (default: the server's, normal)"},
			&cli.DurationFlag{Name: "ttl", Usage: "how long the message may wait in an inbox, whole seconds (default: the server's)"},
			&cli.StringFlag{Name: "idempotency-key", Usage: "a retry with the same key stores nothing new"},
			&cli.StringSliceFlag{Name: "region", Usage: "region to push to (repeatable, or \"all\"); default this region only. Other regions are reached through the bridge"},
			&cli.BoolFlag{Name: "wait-ack", Usage: "wait until every target device acked the message"},
			&cli.DurationFlag{Name: "timeout", Usage: "how long --wait-ack waits", Value: 10 * time.Second},
		}, settingFlags(setPushURL, setApp, setAPIKey)...), outputFlags()...),
		Action: func(c *cli.Context) error { return runPush(c, e) },
	}
}

// pushOutput is the JSON output of push: the API's answer, with the ack
// outcome per device under --wait-ack.
type pushOutput struct {
	ID         string             `json:"id"`
	Stored     bool               `json:"stored"`
	Results    []pushResultOutput `json:"results,omitempty"`
	Recipients *int               `json:"recipients,omitempty"`
	OtherNodes *int               `json:"other_nodes,omitempty"`
	GroupEpoch string             `json:"group_epoch,omitempty"`
	GroupSeq   uint64             `json:"group_seq,omitempty"`
	Bridged    map[string]string  `json:"bridged,omitempty"`
}

type pushResultOutput struct {
	api.PushResult
	Acked        *bool    `json:"acked,omitempty"`
	AckLatencyMS *float64 `json:"ack_latency_ms,omitempty"`
}

func runPush(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if c.NArg() > 0 {
		return usagef("unexpected arguments %q", c.Args().Slice())
	}
	req, err := pushRequestFromFlags(c, e)
	if err != nil {
		return err
	}
	if c.IsSet("devices-file") {
		return runPushFile(c, e, format, req)
	}
	for _, name := range []string{"batch", "concurrency"} {
		if c.IsSet(name) {
			return usagef("--%s goes with --devices-file", name)
		}
	}
	waitAck := c.Bool("wait-ack")
	timeout := c.Duration("timeout")
	if waitAck && len(req.Devices) == 0 && len(req.Users) == 0 {
		return usagef("--wait-ack needs --device or --user: group and broadcast messages are not acked")
	}
	if waitAck && req.Regions != nil {
		return usagef("--wait-ack reads acks in this region only; it does not go with --region")
	}
	if waitAck && timeout <= 0 {
		return usagef("--timeout %s: must be positive", timeout)
	}
	k, err := loadConfig(c, e)
	if err != nil {
		return err
	}
	app, err := k.require(setApp)
	if err != nil {
		return err
	}
	req.App = &app
	cl, err := pushClient(k, ackPollers)
	if err != nil {
		return err
	}

	ctx := c.Context
	start := time.Now()
	resp, err := cl.Push(ctx, req)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	out := pushOutput{ID: resp.ID, Stored: resp.Stored, Recipients: resp.Recipients, OtherNodes: resp.OtherNodes,
		GroupEpoch: resp.GroupEpoch, GroupSeq: resp.GroupSeq, Bridged: resp.Bridged}
	var rejected []string
	for _, r := range resp.Results {
		out.Results = append(out.Results, pushResultOutput{PushResult: r})
		if r.Status == api.StatusRejected {
			who := r.Device
			if r.Device == "" {
				who = "user " + r.User
			}
			rejected = append(rejected, who+" ("+r.Reason+")")
		}
	}
	var notBridged []string
	for _, r := range sortedKeys(resp.Bridged) {
		if resp.Bridged[r] != api.BridgedQueued {
			notBridged = append(notBridged, r+" ("+resp.Bridged[r]+")")
		}
	}
	var unacked []string
	var ackErr error
	if waitAck {
		unacked, ackErr = waitAcks(ctx, cl, app, out.Results, start, timeout)
	}
	if err := printPush(e.stdout, format, &out, waitAck); err != nil {
		return err
	}
	var problems []string
	if len(rejected) > 0 {
		noun := "devices"
		if len(req.Users) > 0 {
			noun = "results"
		}
		problems = append(problems, fmt.Sprintf("%d of %d %s rejected: %s", len(rejected), len(resp.Results), noun, strings.Join(rejected, ", ")))
	}
	if len(notBridged) > 0 {
		problems = append(problems, "not on its way to region "+strings.Join(notBridged, ", "))
	}
	if len(unacked) > 0 {
		msg := fmt.Sprintf("not acked within %s: %s", timeout, strings.Join(unacked, ", "))
		if ackErr != nil {
			msg += fmt.Sprintf(" (last poll error: %v)", ackErr)
		}
		problems = append(problems, msg)
	}
	if len(problems) > 0 {
		return fmt.Errorf("push %s: %s", resp.ID, strings.Join(problems, "; "))
	}
	return nil
}

// pushClient builds the push API client from the resolved settings.
// conns sizes the idle connection pool for concurrent callers (0: one).
func pushClient(k *config, conns int) (*api.Client, error) {
	base, err := k.require(setPushURL)
	if err != nil {
		return nil, err
	}
	key, err := k.require(setAPIKey)
	if err != nil {
		return nil, err
	}
	tc, err := k.tlsConfig()
	if err != nil {
		return nil, err
	}
	cl, err := api.NewClient(base, key, httpClient(conns, tc))
	if err != nil {
		return nil, usagef("--%s: %v", setPushURL.flag(), err)
	}
	return cl, nil
}

func pushRequestFromFlags(c *cli.Context, e *env) (*api.PushRequest, error) {
	req := &api.PushRequest{
		Devices:        c.StringSlice("device"),
		Users:          c.StringSlice("user"),
		Group:          optional(c.String("group")),
		Broadcast:      c.Bool("broadcast"),
		Business:       optional(c.String("business")),
		IdempotencyKey: optional(c.String("idempotency-key")),
	}
	targets := 0
	for _, set := range []bool{len(req.Devices) > 0, len(req.Users) > 0, req.Group != nil, req.Broadcast, c.IsSet("devices-file")} {
		if set {
			targets++
		}
	}
	if targets != 1 {
		return nil, usagef("give exactly one of --device, --devices-file, --user, --group and --broadcast")
	}
	filter, err := filterFromFlags(c)
	if err != nil {
		return nil, err
	}
	if filter != nil && req.Group == nil && !req.Broadcast {
		return nil, usagef("--filter-* go with --group or --broadcast")
	}
	req.Filter = filter
	sources := 0
	for _, name := range []string{"data", "data-base64", "data-file"} {
		if c.IsSet(name) {
			sources++
		}
	}
	if sources != 1 {
		return nil, usagef("give exactly one of --data, --data-base64 and --data-file")
	}
	switch {
	case c.IsSet("data"):
		s := c.String("data")
		req.Data = &s
	case c.IsSet("data-base64"):
		b64 := c.String("data-base64")
		if _, err := base64.StdEncoding.DecodeString(b64); err != nil {
			return nil, usagef("--data-base64: %v", err)
		}
		req.DataBase64 = &b64
	default:
		b, err := readDataFile(c.String("data-file"), e.stdin)
		if err != nil {
			return nil, err
		}
		if utf8.Valid(b) {
			s := string(b)
			req.Data = &s
		} else {
			req.DataBase64 = api.Ptr(base64.StdEncoding.EncodeToString(b))
		}
	}
	if regions := c.StringSlice("region"); len(regions) > 0 {
		if slices.Contains(regions, api.RegionsAll) {
			if len(regions) > 1 {
				return nil, usagef("--region all goes alone")
			}
			req.Regions = api.AllRegions()
		} else {
			req.Regions = api.RegionList(regions...)
		}
	}
	switch p := c.String("priority"); p {
	case "", "high", "normal", "low":
		req.Priority = optional(p)
	default:
		return nil, usagef("--priority %q: want high, normal or low", p)
	}
	if c.IsSet("ttl") {
		ttl := c.Duration("ttl")
		if ttl < time.Second || ttl%time.Second != 0 {
			return nil, usagef("--ttl %s: want whole seconds, at least 1s", ttl)
		}
		req.TTL = api.Ptr(int64(ttl / time.Second))
	}
	return req, nil
}

// filterFromFlags reads the --filter-* flags; nil when none is given. A
// version is a prefix, or MIN..MAX with either end left out.
func filterFromFlags(c *cli.Context) (*api.Filter, error) {
	f := &api.Filter{Platforms: c.StringSlice("filter-platform"), Businesses: c.StringSlice("filter-business"),
		Tags: c.StringSlice("filter-tag")}
	for _, v := range c.StringSlice("filter-version") {
		lo, hi, ranged := strings.Cut(v, "..")
		switch {
		case !ranged && v != "":
			f.Versions = append(f.Versions, api.VersionMatch{Prefix: api.Ptr(v)})
		case ranged && (lo != "" || hi != ""):
			f.Versions = append(f.Versions, api.VersionMatch{Min: optional(lo), Max: optional(hi)})
		default:
			return nil, usagef("--filter-version %q: a prefix, or MIN..MAX", v)
		}
	}
	if len(f.Platforms)+len(f.Versions)+len(f.Businesses)+len(f.Tags) == 0 {
		return nil, nil
	}
	return f, nil
}

// optional turns a flag's value into an optional request field: nil when
// the flag was not given (or given empty), which leaves the field out.
func optional(v string) *string {
	if v == "" {
		return nil
	}
	return &v
}

// httpClient returns a client whose pool keeps conns idle connections per
// host, so concurrent callers (bench, ack polls) reuse connections instead
// of opening one per request; tc (nil: the system's roots) is what it
// trusts over https.
func httpClient(conns int, tc *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.MaxIdleConnsPerHost = max(conns, 2)
	tr.MaxIdleConns = max(conns, 2) * 2
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func readDataFile(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		b, err := io.ReadAll(io.LimitReader(stdin, maxDataFile+1))
		if err != nil {
			return nil, fmt.Errorf("read payload from stdin: %w", err)
		}
		if len(b) > maxDataFile {
			return nil, usagef("payload on stdin is over %d bytes", maxDataFile)
		}
		return b, nil
	}
	b, err := readLimited(path, maxDataFile)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, usagef("--data-file: %v", err)
		}
		return nil, fmt.Errorf("read payload: %w", err)
	}
	return b, nil
}

// waitAcks polls each accepted device until its ack cursor reaches the
// message's sequence number, filling Acked and AckLatencyMS, and returns
// the devices not acked before timeout with the last poll error seen.
func waitAcks(ctx context.Context, cl *api.Client, app string, results []pushResultOutput, start time.Time, timeout time.Duration) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		mu      sync.Mutex
		lastErr error
		wg      sync.WaitGroup
	)
	sem := make(chan struct{}, ackPollers)
	for i := range results {
		r := &results[i]
		if !r.Accepted() || r.Seq == 0 {
			continue
		}
		no := false
		r.Acked = &no
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat, ok, err := pollAck(ctx, cl, app, r.Device, r.Seq, start, sem)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				lastErr = err
			}
			if !ok {
				return
			}
			yes := true
			ms := float64(lat.Microseconds()) / 1000
			r.Acked, r.AckLatencyMS = &yes, &ms
		}()
	}
	wg.Wait()
	var unacked []string
	for _, r := range results {
		if r.Acked != nil && !*r.Acked {
			unacked = append(unacked, r.Device)
		}
	}
	return unacked, lastErr
}

// pollAck asks for device's state until acked >= seq and returns the time
// from start to the answer that showed it; ok is false when ctx ended
// first. err is the last poll failure, if any. Client errors other than
// rate limiting end the wait at once: polling again cannot fix them.
func pollAck(ctx context.Context, cl *api.Client, app, device string, seq uint64, start time.Time, sem chan struct{}) (lat time.Duration, ok bool, err error) {
	t := time.NewTicker(ackPollInterval)
	defer t.Stop()
	var lastErr error
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return 0, false, lastErr
		}
		st, err := cl.Device(ctx, app, device)
		<-sem
		switch {
		case err == nil && st.Acked >= seq:
			return time.Since(start), true, nil
		case err != nil && ctx.Err() == nil:
			var ae *api.APIError
			if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Status != 429 {
				return 0, false, err
			}
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return 0, false, lastErr
		case <-t.C:
		}
	}
}

func printPush(w io.Writer, format format, out *pushOutput, waitAck bool) error {
	if format == formatJSON {
		return writeJSON(w, out)
	}
	fmt.Fprintf(w, "ID: %s\n", out.ID)
	for _, r := range sortedKeys(out.Bridged) {
		fmt.Fprintf(w, "BRIDGED: %s %s\n", r, out.Bridged[r])
	}
	if out.Recipients != nil {
		fmt.Fprintf(w, "RECIPIENTS: %d\n", *out.Recipients)
		if out.OtherNodes != nil {
			fmt.Fprintf(w, "OTHER_NODES: %d\n", *out.OtherNodes)
		}
		if out.GroupEpoch != "" {
			fmt.Fprintf(w, "GROUP_SEQ: %d (stream epoch %s)\n", out.GroupSeq, out.GroupEpoch)
		}
		return nil
	}
	if len(out.Results) == 0 {
		return nil // for other regions only
	}
	users := slices.ContainsFunc(out.Results, func(r pushResultOutput) bool { return r.User != "" })
	header := []string{"DEVICE", "STATUS", "SEQ", "REASON"}
	if users {
		header = append([]string{"USER"}, header...)
	}
	if waitAck {
		header = append(header, "ACK")
	}
	t := newTable(w, header...)
	for _, r := range out.Results {
		seq := ""
		if r.Seq > 0 {
			seq = strconv.FormatUint(r.Seq, 10)
		}
		status := r.Status
		if r.Duplicate {
			status += ",duplicate"
		}
		row := []string{r.Device, status, seq, r.Reason}
		if users {
			row = append([]string{r.User}, row...)
		}
		if waitAck {
			switch {
			case r.AckLatencyMS != nil:
				row = append(row, strconv.FormatFloat(*r.AckLatencyMS, 'f', 1, 64)+"ms")
			case r.Acked != nil:
				row = append(row, "timeout")
			default:
				row = append(row, "")
			}
		}
		t.row(row...)
	}
	return t.flush()
}
