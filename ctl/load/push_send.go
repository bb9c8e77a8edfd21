package load

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pushd/pushd/appliance/api"
)

// msgKey is one device-message: a message id and a device index.
type msgKey struct {
	id     string
	device int
}

type deviceLoad struct {
	count  int
	maxSeq uint64
}

// sendResult is what the sender saw. Guarded by mu while sending.
type sendResult struct {
	mu             sync.Mutex
	accepted       map[msgKey]uint64 // → inbox seq (0: not stored)
	perDevice      []deviceLoad
	attempted      int // device-messages requested
	requests       int
	failedRequests int
	errors         int // device-messages not accepted
	why            Reasons
	reqLatency     Histogram
	firstSend      time.Time
	lastAnswer     time.Time
}

// send sends the pushes: request k is one message to Batch devices
// starting at device k·Batch (modulo Devices), paced to Rate, with
// Concurrency requests in flight.
func (s *Push) send(ctx context.Context) *sendResult {
	r := &sendResult{accepted: map[msgKey]uint64{}, perDevice: make([]deviceLoad, s.Devices)}
	reqs := make(chan int)
	start := time.Now()
	go func() {
		defer close(reqs)
		for k := 0; ; k++ {
			if s.Pushes > 0 && k*s.Batch >= s.Pushes {
				return
			}
			if s.Duration > 0 && time.Since(start) >= s.Duration {
				return
			}
			if s.Rate > 0 {
				due := start.Add(time.Duration(float64(k*s.Batch) / s.Rate * float64(time.Second)))
				if sleepCtx(ctx, time.Until(due)) != nil {
					return
				}
			}
			select {
			case reqs <- k:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range s.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range reqs {
				r.request(ctx, s, k)
			}
		}()
	}
	wg.Wait()
	return r
}

// request makes request k and records its outcome.
func (r *sendResult) request(ctx context.Context, s *Push, k int) {
	n := s.Batch
	if s.Pushes > 0 {
		n = min(n, s.Pushes-k*s.Batch)
	}
	devices := make([]string, n)
	index := make(map[string]int, n)
	for j := range n {
		d := (k*s.Batch + j) % s.Devices
		devices[j] = s.Target.device(d)
		index[devices[j]] = d
	}
	sent := time.Now()
	payload := strconv.FormatInt(sent.UnixNano(), 10) + "|"
	payload += strings.Repeat("x", max(0, s.PayloadSize-len(payload)))
	req := &api.PushRequest{App: &s.Target.App, Devices: devices, Data: &payload}
	if s.bridged != nil {
		req.Regions = api.RegionList(s.bridged.region)
	}
	resp, err := s.API.Push(ctx, req)
	answered := time.Now()

	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	r.attempted += n
	if r.firstSend.IsZero() || sent.Before(r.firstSend) {
		r.firstSend = sent
	}
	if answered.After(r.lastAnswer) {
		r.lastAnswer = answered
	}
	if err != nil {
		r.failedRequests++
		r.errors += n
		r.why.Add(errorReason(err), n)
		return
	}
	r.reqLatency.Record(answered.Sub(sent))
	if s.bridged != nil {
		r.bridgedAnswer(resp, s.bridged.region, devices, index)
		return
	}
	answeredFor := 0
	for _, res := range resp.Results {
		d, ok := index[res.Device]
		if !ok {
			r.why.Add("answer names a device not in the request", 1)
			continue
		}
		answeredFor++
		if !res.Accepted() {
			r.errors++
			r.why.Add("rejected: "+res.Reason, 1)
			continue
		}
		r.accepted[msgKey{id: resp.ID, device: d}] = res.Seq
		pd := &r.perDevice[d]
		pd.count++
		pd.maxSeq = max(pd.maxSeq, res.Seq)
	}
	if missing := n - answeredFor; missing > 0 {
		r.errors += missing
		r.why.Add("no result for a device in the answer", missing)
	}
}

// bridgedAnswer records the answer to a push for another region: its
// devices are accepted together when the message is on its way there.
// Lock must be held.
func (r *sendResult) bridgedAnswer(resp *api.PushResponse, region string, devices []string, index map[string]int) {
	if st := resp.Bridged[region]; st != api.BridgedQueued {
		if st == "" {
			st = "no bridged status in the answer"
		}
		r.errors += len(devices)
		r.why.Add("bridged: "+st, len(devices))
		return
	}
	for _, dev := range devices {
		d := index[dev]
		r.accepted[msgKey{id: resp.ID, device: d}] = 0
		r.perDevice[d].count++
	}
}
