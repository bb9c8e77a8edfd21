package ctl

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/token"
)

// push --devices-file: one message to a list of devices, too long for one
// request, sent in batches. Each batch is its own message (its own id)
// with its own idempotency key, the run's key (--idempotency-key, else a
// random one) and the batch's number, so a batch sent again after a lost
// answer or a 503 stores nothing twice.

const (
	// maxDevicesFile bounds the devices file: 10 million ids.
	maxDevicesFile = 1 << 30
	// batchAttempts bounds the attempts of one batch that the region
	// could not take for now (connection failed, 429, 503).
	batchAttempts = 5
)

// pushFileOutput is the summary of push --devices-file.
type pushFileOutput struct {
	Devices   int            `json:"devices"`
	Batches   int            `json:"batches"`
	Sent      int            `json:"sent"`
	Stored    int            `json:"stored"`
	Delivered int            `json:"delivered"`
	Rejected  map[string]int `json:"rejected"`
	Failed    int            `json:"failed"`
	// Messages are the batches the region answered, in batch order.
	Messages []pushFileBatch `json:"messages"`
	// Errors are the batches it did not, with why.
	Errors     []pushFileError `json:"errors,omitempty"`
	DurationMS float64         `json:"duration_ms"`
}

type pushFileBatch struct {
	Batch     int    `json:"batch"`
	ID        string `json:"id"`
	Devices   int    `json:"devices"`
	Stored    int    `json:"stored"`
	Delivered int    `json:"delivered"`
	Rejected  int    `json:"rejected"`
}

type pushFileError struct {
	Batch   int    `json:"batch"`
	Devices int    `json:"devices"`
	Error   string `json:"error"`
}

func runPushFile(c *cli.Context, e *env, format format, req *api.PushRequest) error {
	batch, concurrency := c.Int("batch"), c.Int("concurrency")
	switch {
	case batch < 1 || batch > 1000:
		return usagef("--batch %d: must be 1..1000 (the push API takes at most 1,000 devices a request)", batch)
	case concurrency < 1 || concurrency > 64:
		return usagef("--concurrency %d: must be 1..64", concurrency)
	case c.Bool("wait-ack"):
		return usagef("--wait-ack does not go with --devices-file: follow the devices with device show or top instead")
	case c.String("devices-file") == "-" && c.String("data-file") == "-":
		return usagef("--devices-file - and --data-file - cannot both read stdin")
	}
	devices, err := readDevicesFile(c.String("devices-file"), e.stdin)
	if err != nil {
		return err
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
	cl, err := pushClient(k, concurrency)
	if err != nil {
		return err
	}
	prefix := rand.Text()[:12]
	if req.IdempotencyKey != nil {
		prefix = *req.IdempotencyKey
	}
	if !token.ValidID(prefix + "-" + strconv.Itoa((len(devices)+batch-1)/batch)) {
		return usagef("--idempotency-key %q: too long to number the batches after it", prefix)
	}

	p := newProgress(e.stderr, len(devices))
	out := sendBatches(c.Context, cl, req, devices, batch, concurrency, prefix, p)
	p.finish(out)
	if format == formatJSON {
		if err := writeJSON(e.stdout, out); err != nil {
			return err
		}
	} else if err := printPushFile(e.stdout, out); err != nil {
		return err
	}
	rejected := 0
	for _, n := range out.Rejected {
		rejected += n
	}
	switch {
	case c.Context.Err() != nil:
		return fmt.Errorf("push: interrupted after %d of %d devices", out.Sent, out.Devices)
	case out.Failed > 0 || rejected > 0:
		return fmt.Errorf("push: %d of %d devices rejected, %d in batches that failed", rejected, out.Devices, out.Failed)
	}
	return nil
}

// readDevicesFile reads device ids, one a line; blank lines and lines
// starting with # are skipped. Every id is checked, and none may come
// twice, before anything is sent.
func readDevicesFile(path string, stdin io.Reader) ([]string, error) {
	var b []byte
	var err error
	if path == "-" {
		if b, err = io.ReadAll(io.LimitReader(stdin, maxDevicesFile+1)); err == nil && len(b) > maxDevicesFile {
			return nil, usagef("--devices-file: stdin holds more than %d bytes", maxDevicesFile)
		}
	} else {
		b, err = readLimited(path, maxDevicesFile)
	}
	if err != nil {
		return nil, usagef("--devices-file: %v", err)
	}
	var devices []string
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for line := 1; sc.Scan(); line++ {
		id := strings.TrimSpace(sc.Text())
		if id == "" || strings.HasPrefix(id, "#") {
			continue
		}
		if !token.ValidID(id) {
			return nil, usagef("--devices-file %s line %d: %q is not a device id (1-128 letters, digits or ._:-)", path, line, id)
		}
		if first, dup := seen[id]; dup {
			return nil, usagef("--devices-file %s line %d: device %s again (first on line %d)", path, line, id, first)
		}
		seen[id] = line
		devices = append(devices, id)
	}
	if err := sc.Err(); err != nil {
		return nil, usagef("--devices-file %s: %v", path, err)
	}
	if len(devices) == 0 {
		return nil, usagef("--devices-file %s lists no device", path)
	}
	return devices, nil
}

// sendBatches sends the batches, concurrency at a time, and sums their
// answers. A refusal that every batch would get (a 4xx other than 429:
// bad payload, unknown app, a batch over the app's burst) stops the run.
func sendBatches(ctx context.Context, cl *api.Client, tmpl *api.PushRequest, devices []string, size, concurrency int,
	prefix string, p *progress) pushFileOutput {
	start := time.Now()
	n := (len(devices) + size - 1) / size
	out := pushFileOutput{Devices: len(devices), Batches: n, Rejected: map[string]int{}, Messages: []pushFileBatch{}}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, concurrency)
	for b := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			mu.Lock()
			out.Failed += len(devices) - b*size
			out.Errors = append(out.Errors, pushFileError{Batch: b + 1, Devices: len(devices) - b*size, Error: "not sent: " + context.Cause(ctx).Error()})
			mu.Unlock()
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ids := devices[b*size : min(len(devices), (b+1)*size)]
			req := *tmpl
			req.Devices = ids
			req.IdempotencyKey = api.Ptr(prefix + "-" + strconv.Itoa(b+1))
			resp, err := pushBatch(ctx, cl, &req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				out.Failed += len(ids)
				out.Errors = append(out.Errors, pushFileError{Batch: b + 1, Devices: len(ids), Error: err.Error()})
				var ae *api.APIError
				if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Status != http.StatusTooManyRequests {
					cancel(fmt.Errorf("batch %d was refused %s, as every batch would be", b+1, ae.Code))
				}
				p.add(len(ids), true)
				return
			}
			pb := pushFileBatch{Batch: b + 1, ID: resp.ID, Devices: len(ids)}
			for _, r := range resp.Results {
				switch r.Status {
				case api.StatusDelivered:
					pb.Delivered++
					pb.Stored++
				case api.StatusStored:
					pb.Stored++
				default:
					pb.Rejected++
					out.Rejected[r.Reason]++
				}
			}
			out.Sent += len(ids)
			out.Stored += pb.Stored
			out.Delivered += pb.Delivered
			out.Messages = append(out.Messages, pb)
			p.add(len(ids), false)
		}()
	}
	wg.Wait()
	slices.SortFunc(out.Messages, func(a, b pushFileBatch) int { return a.Batch - b.Batch })
	slices.SortFunc(out.Errors, func(a, b pushFileError) int { return a.Batch - b.Batch })
	out.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	return out
}

// pushBatch sends one batch, again with the same idempotency key while
// the region cannot take it for now: a connection that failed, 429 (after
// its Retry-After) or 503, up to batchAttempts.
func pushBatch(ctx context.Context, cl *api.Client, req *api.PushRequest) (*api.PushResponse, error) {
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		resp, err := cl.Push(ctx, req)
		if err == nil {
			return resp, nil
		}
		var ae *api.APIError
		transient := !errors.As(err, &ae) || ae.Status == http.StatusTooManyRequests || ae.Status >= 500
		if !transient || attempt == batchAttempts || ctx.Err() != nil {
			return nil, err
		}
		if ae != nil {
			wait = max(wait, ae.RetryAfter)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// progress reports a devices-file push on stderr: a bar redrawn in place
// on a terminal, else a line at most every second and a last one.
type progress struct {
	w        io.Writer
	tty      bool
	total    int
	mu       sync.Mutex
	done     int
	failed   int
	lastLine time.Time
}

func newProgress(w io.Writer, total int) *progress {
	return &progress{w: w, tty: isTerminal(w), total: total, lastLine: time.Now()}
}

func (p *progress) add(devices int, failed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += devices
	if failed {
		p.failed += devices
	}
	switch {
	case p.tty:
		const width = 40
		fill := width * p.done / p.total
		fmt.Fprintf(p.w, "\r[%s%s] %d/%d devices", strings.Repeat("=", fill), strings.Repeat(" ", width-fill), p.done, p.total)
	case time.Since(p.lastLine) >= time.Second:
		p.lastLine = time.Now()
		fmt.Fprintf(p.w, "pushctl push: %d/%d devices sent (%d%%)\n", p.done, p.total, 100*p.done/p.total)
	}
}

func (p *progress) finish(out pushFileOutput) {
	if p.tty {
		fmt.Fprintln(p.w)
	}
	fmt.Fprintf(p.w, "pushctl push: %d/%d devices sent in %d batches (%d failed) in %s\n", out.Sent, out.Devices, out.Batches,
		len(out.Errors), time.Duration(out.DurationMS*float64(time.Millisecond)).Round(time.Millisecond))
	for _, b := range out.Errors {
		fmt.Fprintf(p.w, "pushctl push: batch %d (%d devices): %s\n", b.Batch, b.Devices, b.Error)
	}
}

func printPushFile(w io.Writer, out pushFileOutput) error {
	t := newTable(w)
	t.row("DEVICES", strconv.Itoa(out.Devices))
	t.row("BATCHES", strconv.Itoa(out.Batches))
	t.row("SENT", strconv.Itoa(out.Sent))
	t.row("STORED", strconv.Itoa(out.Stored))
	t.row("DELIVERED", strconv.Itoa(out.Delivered))
	rejected, reasons := 0, []string{}
	for _, r := range slices.Sorted(maps.Keys(out.Rejected)) {
		rejected += out.Rejected[r]
		reasons = append(reasons, fmt.Sprintf("%s %d", r, out.Rejected[r]))
	}
	line := strconv.Itoa(rejected)
	if len(reasons) > 0 {
		line += " (" + strings.Join(reasons, ", ") + ")"
	}
	t.row("REJECTED", line)
	t.row("FAILED", strconv.Itoa(out.Failed))
	return t.flush()
}
