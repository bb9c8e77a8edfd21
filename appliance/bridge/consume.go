package bridge

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/streams"
)

const (
	// maxPollRecords bounds the records one poll hands the importer.
	maxPollRecords = 10_000
	// importRetryMin and importRetryMax bound the pause between attempts
	// to import a record while the region's Redis cannot be reached.
	importRetryMin = 50 * time.Millisecond
	importRetryMax = 2 * time.Second
	// commitTimeout bounds a commit when the bridge is stopping.
	commitTimeout = 5 * time.Second
)

// consumer is the node's member of the region's consumer group. One
// goroutine, run, polls; each poll's records are imported partition by
// partition in parallel, each partition's in order; then the records
// whose work is done — imported into this region's Redis, or skipped on
// their headers — are committed, and only then may the group rebalance
// (kgo.BlockRebalanceOnPoll). A record is done only once Import returned
// (Redis answered) or the record was dropped; one interrupted by Close is
// not committed, and is read again, by this node after a restart or by
// another: the import is idempotent by message id (docs/delivery.md).
type consumer struct {
	b *Bridge

	mu    sync.Mutex
	parts map[topicPartition]*partState // held partitions
}

type topicPartition struct {
	topic     string
	partition int32
}

// partState is one held partition. Guarded by consumer.mu.
type partState struct {
	committed int64       // next offset the group will read from; -1 unknown
	hw        int64       // high watermark at the last fetch; -1 unknown
	done      *kgo.Record // newest record whose work is done; nil none yet
}

func newConsumer(b *Bridge) *consumer {
	return &consumer{b: b, parts: map[topicPartition]*partState{}}
}

// run consumes until ctx ends, then commits what it imported and leaves
// the group.
func (c *consumer) run(ctx context.Context) {
	b := c.b
	opts := append(b.clientOpts("consumer"),
		kgo.ConsumerGroup(b.cfg.Group),
		kgo.ConsumeTopics(b.topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.InstanceID(b.core.ID()),
		kgo.SessionTimeout(b.cfg.SessionTimeout),
		kgo.OnPartitionsAssigned(c.assigned),
		kgo.OnPartitionsRevoked(c.revoked),
		kgo.OnPartitionsLost(c.lost),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		// New built a producer from the same options; this cannot fail
		// on them alone.
		b.errs.add("fetch", err)
		b.log.Error("the bridge consumer could not start: nothing is imported", "err", err)
		return
	}
	for {
		fs := cl.PollRecords(ctx, maxPollRecords)
		if fs.IsClientClosed() || ctx.Err() != nil {
			break
		}
		fs.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			if b.errs.add("fetch", err) {
				b.log.Warn("fetch", "topic", t, "partition", p, "err", err)
			}
		})
		c.process(ctx, fs)
		c.commit(ctx, cl, nil)
		cl.AllowRebalance()
	}
	cctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	c.commit(cctx, cl, nil)
	cancel()
	cl.AllowRebalance()
	// Close runs revoked, which commits anything still uncommitted, and
	// leaves the group (a static member leaves by its session timeout).
	cl.Close()
}

// process imports one poll's records, its partitions in parallel.
func (c *consumer) process(ctx context.Context, fs kgo.Fetches) {
	var wg sync.WaitGroup
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		c.mu.Lock()
		if st := c.parts[topicPartition{p.Topic, p.Partition}]; st != nil && p.HighWatermark >= 0 {
			st.hw = p.HighWatermark
		}
		c.mu.Unlock()
		if len(p.Records) == 0 {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.partition(ctx, p.Topic, p.Records)
		}()
	})
	wg.Wait()
}

// job is a record's decision: an import, or the outcome of a record that
// needs none.
type job struct {
	out outcome
	imp *appliance.Import // nil unless the record is imported
}

// partition imports one partition's records in order. Consecutive
// records of one device push (its shards that share a partition) become
// one Import.
func (c *consumer) partition(ctx context.Context, topic string, recs []*kgo.Record) {
	stats := c.b.from[topic]
	jobs := make([]job, len(recs))
	for i, r := range recs {
		jobs[i] = c.decide(r)
	}
	for i := 0; i < len(recs); {
		j := i + 1
		if imp := jobs[i].imp; imp != nil {
			if imp.Kind == appliance.TargetDevices {
				for j < len(recs) && jobs[j].imp != nil && jobs[j].imp.Kind == appliance.TargetDevices &&
					jobs[j].imp.App == imp.App && jobs[j].imp.Msg.ID == imp.Msg.ID {
					imp.Targets = append(imp.Targets, jobs[j].imp.Targets...)
					j++
				}
			}
			out, ok := c.importOnce(ctx, imp)
			if !ok {
				return // stopping: these records are not done
			}
			jobs[i].out = out
			for k := i + 1; k < j; k++ {
				jobs[k].out = out
			}
		}
		for k := i; k < j; k++ {
			stats.n[jobs[k].out].Add(1)
		}
		c.markDone(recs[j-1])
		i = j
	}
}

// decide reads a record's headers and, only if it is for this region and
// deliverable here, its value.
func (c *consumer) decide(r *kgo.Record) job {
	b := c.b
	route, err := DecodeRoute(r.Headers)
	switch {
	case err != nil:
		c.invalid(r, err)
		return job{out: outInvalid}
	case route.Origin == b.region:
		return job{out: outSkippedOrigin}
	case !route.For(b.region):
		return job{out: outSkippedRegion}
	case !time.Now().Before(route.Expires()):
		return job{out: outExpired}
	}
	if _, shed := b.core.Sheds(route.Priority, route.Business); shed {
		return job{out: outShed}
	}
	app, ok := b.core.LookupApp(route.App)
	if !ok {
		return job{out: outUnknownApp}
	}
	if route.Business != "" && !app.BusinessAllowed(route.Business) {
		return job{out: outBusiness}
	}
	payload, err := decodeValue(&route, r.Value)
	b.decoded.Add(1)
	if err != nil {
		c.invalid(r, err)
		return job{out: outInvalid}
	}
	if len(payload) > app.MaxPayload() {
		return job{out: outTooLarge}
	}
	limits := b.core.PushLimits()
	return job{imp: &appliance.Import{App: route.App, Kind: route.Kind, Targets: route.Targets,
		Msg: streams.Message{ID: route.ID, Business: route.Business, Priority: streams.Priority(route.Priority),
			Created: route.Created, TTL: min(route.TTL, limits.MaxTTL), MaxLen: limits.InboxMaxLen, Payload: payload}}}
}

func (c *consumer) invalid(r *kgo.Record, err error) {
	if c.b.errs.gate("invalid") {
		c.b.log.Warn("skipped a bridge record this node cannot read", "topic", r.Topic, "partition", r.Partition,
			"offset", r.Offset, "err", err)
	}
}

// importOnce imports one message, retrying while the region's Redis
// cannot be reached. ok is false when ctx ended first.
func (c *consumer) importOnce(ctx context.Context, imp *appliance.Import) (out outcome, ok bool) {
	b := c.b
	wait := importRetryMin
	for {
		res, err := b.core.Import(ctx, *imp)
		switch {
		case err == nil:
			b.latency.Observe(time.Since(imp.Msg.Created).Seconds())
			if res.Repeat || (res.Stored > 0 && res.Duplicates == res.Stored) {
				return outRepeat, true // read before: a redelivery, a retry
			}
			return outImported, true
		case ctx.Err() != nil:
			return 0, false
		case errors.Is(err, streams.ErrExpired):
			return outExpired, true
		case !errors.Is(err, appliance.ErrUnavailable):
			if b.errs.add("import", err) {
				b.log.Error("the region's store refused an imported message: dropped", "id", imp.Msg.ID, "err", err)
			}
			return outRefused, true
		}
		if b.errs.add("import", err) {
			b.log.Warn("import waits for the region's Redis", "id", imp.Msg.ID, "retry_in", wait, "err", err)
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(wait):
		}
		wait = min(2*wait, importRetryMax)
	}
}

func (c *consumer) markDone(r *kgo.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.parts[topicPartition{r.Topic, r.Partition}]; st != nil {
		st.done = r
	}
}

// commit commits the newest done record of each held partition (of only
// those given, when partitions is set) not committed yet.
func (c *consumer) commit(ctx context.Context, cl *kgo.Client, partitions map[string][]int32) {
	c.mu.Lock()
	var recs []*kgo.Record
	for tp, st := range c.parts {
		if partitions != nil && !containsPartition(partitions, tp) {
			continue
		}
		if st.done != nil && st.done.Offset+1 > st.committed {
			recs = append(recs, st.done)
		}
	}
	c.mu.Unlock()
	if len(recs) == 0 {
		return
	}
	if err := cl.CommitRecords(ctx, recs...); err != nil {
		if c.b.errs.add("commit", err) {
			c.b.log.Warn("commit: the records will be read again, and their import is idempotent", "err", err)
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range recs {
		if st := c.parts[topicPartition{r.Topic, r.Partition}]; st != nil {
			st.committed = max(st.committed, r.Offset+1)
		}
	}
}

func containsPartition(m map[string][]int32, tp topicPartition) bool {
	for _, p := range m[tp.topic] {
		if p == tp.partition {
			return true
		}
	}
	return false
}

func (c *consumer) assigned(_ context.Context, cl *kgo.Client, added map[string][]int32) {
	committed := cl.CommittedOffsets()
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range added {
		for _, p := range ps {
			st := &partState{committed: -1, hw: -1}
			if o, ok := committed[t][p]; ok {
				st.committed = o.Offset
			}
			c.parts[topicPartition{t, p}] = st
		}
	}
}

// revoked commits what was done in the partitions taken away (and, when
// the client closes, in all of them) and forgets them.
func (c *consumer) revoked(_ context.Context, cl *kgo.Client, revoked map[string][]int32) {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	c.commit(ctx, cl, revoked)
	c.forget(revoked)
}

// lost forgets partitions taken away without a chance to commit.
func (c *consumer) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) { c.forget(lost) }

func (c *consumer) forget(m map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range m {
		for _, p := range ps {
			delete(c.parts, topicPartition{t, p})
		}
	}
}

// partitions lists the held partitions, sorted.
func (c *consumer) partitions() []api.BridgePartition {
	c.mu.Lock()
	out := make([]api.BridgePartition, 0, len(c.parts))
	for tp, st := range c.parts {
		p := api.BridgePartition{Topic: tp.topic, Partition: tp.partition, Committed: st.committed, HighWatermark: st.hw}
		next := st.committed
		if st.done != nil {
			next = st.done.Offset + 1
		}
		if st.hw >= 0 && next >= 0 {
			p.Lag = max(0, st.hw-next)
		} else if st.hw >= 0 {
			p.Lag = st.hw
		}
		out = append(out, p)
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out
}
