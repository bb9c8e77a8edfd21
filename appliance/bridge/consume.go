package bridge

import (
	"context"
	"errors"
	"hash/fnv"
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
// goroutine, run, polls; each poll's records are imported in batches,
// every partition's in order, a few lanes of partitions at once
// (process); then the records whose work is
// done — imported into this region's Redis, or skipped on their headers —
// are committed, and only then may the group rebalance
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

// process imports one poll's records. Each record is decided on its
// headers (and, if it is for this region, its value); then the poll's
// messages are imported in batches of at most maxImportBatch messages,
// each batch one call to the core — one round trip to Redis for all its
// device messages. The partitions are spread over importLanes lanes that
// import at the same time, each taking its partitions one after the
// other, so every partition's records keep their order (a device's
// records are all in one partition) while Redis always has work. Consecutive
// records of one device push in a partition (its shards that share it)
// become one message.
func (c *consumer) process(ctx context.Context, fs kgo.Fetches) {
	var lanes [importLanes][]unit
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		c.mu.Lock()
		if st := c.parts[topicPartition{p.Topic, p.Partition}]; st != nil && p.HighWatermark >= 0 {
			st.hw = p.HighWatermark
		}
		c.mu.Unlock()
		lane := &lanes[laneOf(p.Topic, p.Partition)]
		*lane = c.units(*lane, p.Topic, p.Records)
	})
	var wg sync.WaitGroup
	for _, units := range lanes {
		if len(units) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.importLane(ctx, units)
		}()
	}
	wg.Wait()
}

// importLanes is how many lanes of partitions import at once.
const importLanes = 4

// laneOf spreads partitions over the lanes.
func laneOf(topic string, partition int32) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(topic))
	return int((h.Sum32() + uint32(partition)) % importLanes)
}

// importLane imports one lane's units in order, in batches.
func (c *consumer) importLane(ctx context.Context, units []unit) {
	for len(units) > 0 {
		n, targets, imports := 0, 0, 0
		for n < len(units) && imports < maxImportBatch && targets < maxImportTargets {
			if units[n].imp != nil {
				imports++
				targets += len(units[n].imp.Targets)
			}
			n++
		}
		if !c.importBatch(ctx, units[:n]) {
			return // stopping: these records are not done
		}
		units = units[n:]
	}
}

// Import batches.
const (
	maxImportBatch   = 256
	maxImportTargets = 10_000
)

// unit is one or more consecutive records of a partition that share a
// fate: one message imported, or one record that needs no import.
type unit struct {
	recs  []*kgo.Record
	stats *importStats
	out   outcome           // the outcome, decided, or once imported
	imp   *appliance.Import // nil when there is nothing to import
}

// units appends recs' units, in order.
func (c *consumer) units(units []unit, topic string, recs []*kgo.Record) []unit {
	stats := c.b.from[topic]
	for _, r := range recs {
		out, imp := c.decide(r)
		if last := len(units) - 1; imp != nil && perTarget(imp.Kind) && last >= 0 {
			u := &units[last]
			if u.imp != nil && u.imp.Kind == imp.Kind && u.stats == stats && u.recs[0].Partition == r.Partition &&
				u.imp.App == imp.App && u.imp.Msg.ID == imp.Msg.ID {
				u.imp.Targets = append(u.imp.Targets, imp.Targets...)
				u.recs = append(u.recs, r)
				continue
			}
		}
		units = append(units, unit{recs: []*kgo.Record{r}, stats: stats, out: out, imp: imp})
	}
	return units
}

// perTarget says whether a push of kind is split into a record per shard
// of its targets (devices, users), whose records of one partition are one
// message again.
func perTarget(kind appliance.TargetKind) bool {
	return kind == appliance.TargetDevices || kind == appliance.TargetUsers
}

// importBatch imports the messages of batch in one call to the core,
// again while the region's Redis cannot be reached, then counts each
// record's outcome and marks it done. It returns false when ctx ended
// first: nothing of batch is done.
func (c *consumer) importBatch(ctx context.Context, batch []unit) bool {
	b := c.b
	var imps []appliance.Import
	for _, u := range batch {
		if u.imp != nil {
			imps = append(imps, *u.imp)
		}
	}
	if len(imps) > 0 {
		res, ok := c.importAll(ctx, imps)
		if !ok {
			return false
		}
		k := 0
		for i := range batch {
			u := &batch[i]
			if u.imp == nil {
				continue
			}
			r := res[k]
			k++
			switch {
			case errors.Is(r.Err, streams.ErrExpired):
				u.out = outExpired
			case r.Err != nil:
				u.out = outRefused
				if b.errs.add("import", r.Err) {
					b.log.Error("the region refused an imported message: dropped", "id", u.imp.Msg.ID, "err", r.Err)
				}
			case r.Repeat || (r.Stored > 0 && r.Duplicates == r.Stored):
				u.out = outRepeat // read before: a redelivery, a retry
			default:
				u.out = outImported
			}
			if r.Err == nil {
				b.latency.Observe(time.Since(u.imp.Msg.Created).Seconds())
			}
		}
	}
	for _, u := range batch {
		u.stats.n[u.out].Add(uint64(len(u.recs)))
		c.markDone(u.recs[len(u.recs)-1])
	}
	return true
}

// importAll calls the core's Import until the region's Redis answers.
// ok is false when ctx ended first.
func (c *consumer) importAll(ctx context.Context, imps []appliance.Import) (res []appliance.ImportResult, ok bool) {
	b := c.b
	wait := importRetryMin
	for {
		res, err := b.core.Import(ctx, imps)
		if err == nil {
			return res, true
		}
		if ctx.Err() != nil {
			return nil, false
		}
		if b.errs.add("import", err) {
			b.log.Warn("import waits for the region's Redis", "messages", len(imps), "retry_in", wait, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-time.After(wait):
		}
		wait = min(2*wait, importRetryMax)
	}
}

// decide reads a record's headers and, only if it is for this region and
// deliverable here, its value: the record's outcome, or the import to
// make.
func (c *consumer) decide(r *kgo.Record) (outcome, *appliance.Import) {
	b := c.b
	route, err := DecodeRoute(r.Headers)
	switch {
	case err != nil:
		c.invalid(r, err)
		return outInvalid, nil
	case route.Origin == b.region:
		return outSkippedOrigin, nil
	case !route.For(b.region):
		return outSkippedRegion, nil
	case !time.Now().Before(route.Expires()):
		return outExpired, nil
	}
	if _, shed := b.core.Sheds(route.Priority, route.Business); shed {
		return outShed, nil
	}
	app, ok := b.core.LookupApp(route.App)
	if !ok {
		return outUnknownApp, nil
	}
	if route.Business != "" && !app.BusinessAllowed(route.Business) {
		return outBusiness, nil
	}
	payload, err := decodeValue(&route, r.Value)
	b.decoded.Add(1)
	if err != nil {
		c.invalid(r, err)
		return outInvalid, nil
	}
	if len(payload) > app.MaxPayload() {
		return outTooLarge, nil
	}
	filter, err := appliance.ParseFilter(route.Filter)
	if err != nil { // DecodeRoute checked it
		c.invalid(r, err)
		return outInvalid, nil
	}
	limits := b.core.PushLimits()
	return outImported, &appliance.Import{App: route.App, Kind: route.Kind, Targets: route.Targets, Filter: filter,
		Msg: streams.Message{ID: route.ID, Business: route.Business, Priority: streams.Priority(route.Priority),
			Created: route.Created, TTL: min(route.TTL, limits.MaxTTL), MaxLen: limits.InboxMaxLen, Payload: payload}}
}

func (c *consumer) invalid(r *kgo.Record, err error) {
	if c.b.errs.gate("invalid") {
		c.b.log.Warn("skipped a bridge record this node cannot read", "topic", r.Topic, "partition", r.Partition,
			"offset", r.Offset, "err", err)
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
