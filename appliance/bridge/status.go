package bridge

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushd/pushd/appliance/api"
)

// The bridge's counters are kept once, as atomics, and read both by
// Status (the admin API, pushctl bridge status) and by the Prometheus
// collector at scrape time, so the two never disagree.

// exportStats counts what was exported to one region.
type exportStats struct {
	queued, failed         atomic.Uint64 // pushes
	produced, produceFails atomic.Uint64 // records
	buffered               atomic.Int64  // records in the buffer
}

func (s *exportStats) count(status string) {
	if status == api.BridgedQueued {
		s.queued.Add(1)
	} else {
		s.failed.Add(1)
	}
}

func (s *exportStats) record(err error) {
	s.buffered.Add(-1)
	if err != nil {
		s.produceFails.Add(1)
	} else {
		s.produced.Add(1)
	}
}

// outcome is what became of a consumed record.
type outcome int

const (
	outImported      outcome = iota // delivered in this region
	outRepeat                       // imported before (every device had it; a group or broadcast fanned out)
	outSkippedRegion                // for other regions only (headers)
	outSkippedOrigin                // produced by this region (headers)
	outShed                         // this region's degrade policy sheds it
	outExpired                      // its TTL passed before it got here
	outUnknownApp                   // no app by its id in this region
	outBusiness                     // its business is not enabled for the app here
	outTooLarge                     // its payload is over the app's limit here
	outRefused                      // the store refused it
	outInvalid                      // undecodable headers or value
	outcomeCount
)

var outcomeNames = [outcomeCount]string{"imported", "repeat", "skipped_region", "skipped_origin", "shed", "expired",
	"unknown_app", "business", "too_large", "refused", "invalid"}

// importStats counts the records consumed from one topic.
type importStats struct {
	region string // the region producing to the topic; "" for a shared topic
	n      [outcomeCount]atomic.Uint64
}

func (s *importStats) snapshot(t string) api.BridgeImport {
	out := api.BridgeImport{Topic: t, Region: s.region}
	for o := range outcomeCount {
		v := s.n[o].Load()
		out.Consumed += v
		switch o {
		case outImported, outRepeat:
			out.Imported += v
		case outSkippedRegion, outSkippedOrigin:
			out.Skipped += v
		case outInvalid:
			out.Invalid += v
		default:
			out.Dropped += v
		}
	}
	return out
}

// errorStats counts errors by kind and keeps the newest; it also rate
// limits the logs of each kind of error or event.
type errorStats struct {
	mu       sync.Mutex
	byKind   map[string]uint64
	last     string
	lastAt   time.Time
	loggedAt map[string]time.Time
}

// errorKinds are the kinds of errors counted.
var errorKinds = []string{"commit", "connect", "fetch", "group", "import", "produce"}

// errorLogEvery is how often one kind of error is logged at most; every
// one is counted.
const errorLogEvery = 10 * time.Second

// add counts err under kind and reports whether to log it.
func (s *errorStats) add(kind string, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byKind == nil {
		s.byKind = map[string]uint64{}
	}
	s.byKind[kind]++
	s.last, s.lastAt = kind+": "+err.Error(), time.Now()
	return s.gateLocked(kind)
}

// gate reports whether an event of kind may be logged now.
func (s *errorStats) gate(kind string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gateLocked(kind)
}

func (s *errorStats) gateLocked(kind string) bool {
	if s.loggedAt == nil {
		s.loggedAt = map[string]time.Time{}
	}
	now := time.Now()
	if now.Sub(s.loggedAt[kind]) < errorLogEvery {
		return false
	}
	s.loggedAt[kind] = now
	return true
}

func (s *errorStats) snapshot() (total uint64, byKind map[string]uint64, last string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byKind = make(map[string]uint64, len(s.byKind))
	for k, v := range s.byKind {
		byKind[k] = v
		total += v
	}
	return total, byKind, s.last, s.lastAt
}

// Status is this node's bridge as the admin API reports it.
func (b *Bridge) Status() api.BridgeStatus {
	recs, bytes := b.buffer.state()
	st := api.BridgeStatus{Region: b.region, Peers: b.cfg.Peers, Brokers: b.cfg.Brokers, Topic: b.topic, Group: b.cfg.Group,
		Buffer: api.BridgeBuffer{Records: recs, MaxRecords: b.buffer.maxRecords, Bytes: bytes, MaxBytes: b.buffer.maxBytes}}
	for _, p := range b.cfg.Peers {
		s := b.to[p]
		st.To = append(st.To, api.BridgeExport{Region: p, Buffered: s.buffered.Load(), Queued: s.queued.Load(), Failed: s.failed.Load(),
			Produced: s.produced.Load(), ProduceErrors: s.produceFails.Load()})
	}
	parts := b.consumer.partitions()
	for _, t := range b.topics {
		imp := b.from[t].snapshot(t)
		imp.LastOffset = -1
		for _, p := range parts {
			if p.Topic == t {
				imp.Lag += p.Lag
				imp.LastOffset = max(imp.LastOffset, p.Committed-1)
			}
		}
		st.From = append(st.From, imp)
	}
	st.Partitions = parts
	st.Errors, _, st.LastError, st.LastErrorAt = b.errs.snapshot()
	return st
}

// collector exposes the counters to Prometheus at scrape time.
type collector struct{ b *Bridge }

var (
	descExports  = prometheus.NewDesc("pushd_bridge_exports_total", "Pushes exported to another region, by outcome: queued (in the buffer) or failed (answered bridged: failed).", []string{"region", "outcome"}, nil)
	descProduced = prometheus.NewDesc("pushd_bridge_produced_records_total", "Bridge records Kafka acknowledged (result ok) or failed for good (result error), by destination region.", []string{"region", "result"}, nil)
	descBufRecs  = prometheus.NewDesc("pushd_bridge_buffer_records", "Bridge records produced and not yet acknowledged by Kafka.", nil, nil)
	descBufBytes = prometheus.NewDesc("pushd_bridge_buffer_bytes", "Bytes of the bridge records produced and not yet acknowledged by Kafka.", nil, nil)
	descBufMaxR  = prometheus.NewDesc("pushd_bridge_buffer_max_records", "The bridge buffer's bound in records.", nil, nil)
	descBufMaxB  = prometheus.NewDesc("pushd_bridge_buffer_max_bytes", "The bridge buffer's bound in bytes.", nil, nil)
	descConsumed = prometheus.NewDesc("pushd_bridge_consumed_records_total", "Bridge records consumed, by topic and outcome (imported, repeat, skipped_region and skipped_origin decided on headers alone, shed, expired, unknown_app, business, too_large, refused, invalid).", []string{"topic", "outcome"}, nil)
	descDecoded  = prometheus.NewDesc("pushd_bridge_decoded_values_total", "Bridge record values decoded: only records for this region are.", nil, nil)
	descLag      = prometheus.NewDesc("pushd_bridge_lag_records", "Records not yet consumed in the partitions this node holds, by topic.", []string{"topic"}, nil)
	descErrors   = prometheus.NewDesc("pushd_bridge_errors_total", "Bridge errors by kind: produce, fetch, import, commit.", []string{"kind"}, nil)
)

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descExports, descProduced, descBufRecs, descBufBytes, descBufMaxR, descBufMaxB,
		descConsumed, descDecoded, descLag, descErrors} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for _, p := range b.cfg.Peers {
		s := b.to[p]
		counter(descExports, s.queued.Load(), p, "queued")
		counter(descExports, s.failed.Load(), p, "failed")
		counter(descProduced, s.produced.Load(), p, "ok")
		counter(descProduced, s.produceFails.Load(), p, "error")
	}
	recs, bytes := b.buffer.state()
	gauge(descBufRecs, recs)
	gauge(descBufBytes, bytes)
	gauge(descBufMaxR, b.buffer.maxRecords)
	gauge(descBufMaxB, b.buffer.maxBytes)
	lag := map[string]int64{}
	for _, p := range b.consumer.partitions() {
		lag[p.Topic] += p.Lag
	}
	for _, t := range b.topics {
		s := b.from[t]
		for o := range outcomeCount {
			counter(descConsumed, s.n[o].Load(), t, outcomeNames[o])
		}
		gauge(descLag, lag[t], t)
	}
	counter(descDecoded, b.decoded.Load())
	_, byKind, _, _ := b.errs.snapshot()
	for _, k := range errorKinds {
		counter(descErrors, byKind[k], k)
	}
}
