package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/wire"
)

// Core is what the bridge needs of the node it runs on; *appliance.Node
// is one. The bridge reaches the region only through it: it never
// touches Redis, sessions or locks.
type Core interface {
	ID() string
	Region() string
	Ready() <-chan struct{}
	LookupApp(id string) (appliance.App, bool)
	Sheds(p wire.Priority, business string) (string, bool)
	PushLimits() appliance.PushLimits
	Import(ctx context.Context, imps []appliance.Import) ([]appliance.ImportResult, error)
	Registry() *prometheus.Registry
}

// Bridge is one node's end of the Kafka bridge between regions: a
// producer for the pushes this node's push API exports, and a member of
// the region's consumer group importing what other regions sent here.
// Create it with New, start it with Start, stop it with Close. Its
// methods are safe for concurrent use.
type Bridge struct {
	cfg    Config
	core   Core
	region string
	topic  string   // where this region produces
	topics []string // what it consumes
	log    *slog.Logger

	prod   *kgo.Client
	buffer buffer
	// closing is set when Close begins: exports answer failed from then.
	closing atomic.Bool

	to   map[string]*exportStats // per peer region, fixed at New
	from map[string]*importStats // per consumed topic, fixed at New
	errs errorStats

	consumer *consumer
	decoded  atomic.Uint64 // record values decoded
	latency  prometheus.Histogram

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	started atomic.Bool
	once    sync.Once
}

// New builds the bridge of the node core with cfg, registers its metrics
// on the core's registry, and opens no connection yet: Start does.
func New(core Core, cfg Config, log *slog.Logger) (*Bridge, error) {
	region := core.Region()
	cfg = cfg.withDefaults(region)
	if err := cfg.validate(region); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bridge{cfg: cfg, core: core, region: region, topic: cfg.topicFor(region),
		log: log.With("component", "bridge", "region", region),
		to:  map[string]*exportStats{}, from: map[string]*importStats{}}
	b.buffer.maxRecords, b.buffer.maxBytes = int64(cfg.BufferRecords), cfg.BufferBytes
	b.buffer.empty = closedChan()
	for _, p := range cfg.Peers {
		b.to[p] = &exportStats{}
	}
	if cfg.shared() {
		b.topics = []string{b.topic}
		b.from[b.topic] = &importStats{}
	} else {
		for _, p := range cfg.Peers {
			t := cfg.topicFor(p)
			b.topics = append(b.topics, t)
			b.from[t] = &importStats{region: p}
		}
	}
	opts := append(b.clientOpts("producer"),
		kgo.DefaultProduceTopic(b.topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		kgo.ProducerLinger(cfg.Linger),
		// The bridge bounds the buffer itself (buffer.reserve), all or
		// nothing per push; franz-go's own bound sits above it, so a
		// record the bridge took is never refused for room.
		kgo.MaxBufferedRecords(2*cfg.BufferRecords+keyShards),
		kgo.MaxBufferedBytes(int(2*cfg.BufferBytes)+maxValue),
	)
	var err error
	if b.prod, err = kgo.NewClient(opts...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.consumer = newConsumer(b)
	b.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:                        "pushd_bridge_import_delay_seconds",
		Help:                        "Time from the origin region's push API accepting a message to this region storing it (device imports) or fanning it out.",
		Buckets:                     []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 60},
		NativeHistogramBucketFactor: 1.1,
	})
	if err := core.Registry().Register(b.latency); err != nil {
		b.prod.Close()
		return nil, fmt.Errorf("bridge metrics: %w", err)
	}
	if err := core.Registry().Register(collector{b}); err != nil {
		b.prod.Close()
		return nil, fmt.Errorf("bridge metrics: %w", err)
	}
	return b, nil
}

// clientOpts are the options both Kafka clients share.
func (b *Bridge) clientOpts(role string) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(b.cfg.Brokers...),
		// Every NOT_LEADER_FOR_PARTITION and dropped connection asks for
		// a metadata refresh, and franz-go spaces refreshes by this age:
		// at its default (5 s) four such answers in a row held the
		// producer 20 s; at 250 ms it resumed in 1.1 s.
		kgo.MetadataMinAge(250 * time.Millisecond),
		kgo.ClientID("pushd-" + b.region + "-" + b.core.ID() + "-" + role),
		kgo.WithLogger(kgoLogger{b.log.With("client", role), &b.errs}),
		kgo.WithHooks(hooks{b}),
	}
	if b.cfg.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(b.cfg.TLS))
	}
	if b.cfg.SASL != nil {
		opts = append(opts, kgo.SASL(b.cfg.SASL))
	}
	return opts
}

// Region is this region's name; Peers the other regions the bridge
// reaches.
func (b *Bridge) Region() string  { return b.region }
func (b *Bridge) Peers() []string { return b.cfg.Peers }

// ErrStarted is returned by Start on a bridge started before.
var ErrStarted = errors.New("bridge already started")

// Start begins the bridge's background work and returns at once: Kafka
// being slow or away never holds up the node. It creates the topics it
// produces to and consumes (a topic that exists is fine; a cluster that
// refuses is logged, and the operator creates them), and once the node is
// ready (its metadata caught up, so an app created a moment ago is known)
// joins the region's consumer group.
func (b *Bridge) Start() error {
	if !b.started.CompareAndSwap(false, true) {
		return ErrStarted
	}
	b.wg.Add(2)
	go func() {
		defer b.wg.Done()
		b.createTopics()
	}()
	go func() {
		defer b.wg.Done()
		select {
		case <-b.core.Ready():
		case <-b.ctx.Done():
			return
		}
		b.consumer.run(b.ctx)
	}()
	return nil
}

// Close stops the bridge: exports answer failed from now on, the
// consumer finishes the imports under way, commits them and leaves the
// group, and the producer gets CloseTimeout for Kafka to take what it
// buffered. Records still buffered after that are dropped: logged and
// counted as produce errors. It returns the first problem met, and may
// be called more than once.
func (b *Bridge) Close(ctx context.Context) error {
	var err error
	b.once.Do(func() {
		b.closing.Store(true)
		b.cancel()
		b.wg.Wait() // the consumer committed what it imported, and left
		fctx, cancel := context.WithTimeout(ctx, b.cfg.CloseTimeout)
		ferr := b.prod.Flush(fctx)
		cancel()
		if ferr != nil {
			n := b.prod.BufferedProduceRecords()
			err = fmt.Errorf("bridge: %d records still buffered after %s: dropped: %w", n, b.cfg.CloseTimeout, ferr)
			b.log.Error("closing with records Kafka has not taken: they are dropped", "records", n, "err", ferr)
			// Aborting waits for the produce requests in flight, which a
			// stuck broker may never answer: bounded too, then Close
			// fails whatever is left.
			actx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = b.prod.AbortBufferedRecords(actx)
			cancel()
		}
		b.prod.Close()
		// franz-go fails what is left on Close but runs the promises in a
		// goroutine of its own: wait for them, so that every record is
		// counted (produced or a produce error) once Close returns.
		select {
		case <-b.buffer.drained():
		case <-time.After(time.Second):
			b.log.Error("closing: the producer did not finish every record's promise", "records", b.prod.BufferedProduceRecords())
		}
		b.core.Registry().Unregister(b.latency)
		b.core.Registry().Unregister(collector{b})
	})
	return err
}

// createTopicsRetry bounds the pause between attempts to create the
// topics while the cluster cannot be reached.
const createTopicsRetry = 5 * time.Second

// createTopics creates the topic this region produces to and those it
// consumes, with the cluster's default partitions and replication, until
// the cluster answers.
func (b *Bridge) createTopics() {
	topics := append([]string{b.topic}, b.topics...)
	wait := 100 * time.Millisecond
	for {
		req := kmsg.NewPtrCreateTopicsRequest()
		req.TimeoutMillis = 5000
		seen := map[string]bool{}
		for _, t := range topics {
			if seen[t] {
				continue
			}
			seen[t] = true
			rt := kmsg.NewCreateTopicsRequestTopic()
			rt.Topic, rt.NumPartitions, rt.ReplicationFactor = t, -1, -1
			req.Topics = append(req.Topics, rt)
		}
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		resp, err := req.RequestWith(ctx, b.prod)
		cancel()
		if b.ctx.Err() != nil {
			return
		}
		if err == nil {
			for _, t := range resp.Topics {
				switch err := kerr.ErrorForCode(t.ErrorCode); {
				case err == nil:
					b.log.Info("created topic", "topic", t.Topic)
				case errors.Is(err, kerr.TopicAlreadyExists):
				default:
					b.log.Warn("could not create topic; create it on the cluster", "topic", t.Topic, "err", err)
				}
			}
			return
		}
		b.log.Debug("create topics: cluster not reachable yet", "err", err)
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, createTopicsRetry)
	}
}

// buffer is the producer's bound: records and bytes handed to Kafka and
// not yet acknowledged (or failed).
type buffer struct {
	mu                   sync.Mutex
	records, bytes       int64
	maxRecords, maxBytes int64
	// empty is closed while records is 0, for Close to wait on the last
	// promises.
	empty chan struct{}
}

// reserve takes room for n records of size bytes, all or none.
func (q *buffer) reserve(n, size int64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.records+n > q.maxRecords || q.bytes+size > q.maxBytes {
		return false
	}
	if q.records == 0 && n > 0 {
		q.empty = make(chan struct{})
	}
	q.records += n
	q.bytes += size
	return true
}

func (q *buffer) release(size int64) {
	q.mu.Lock()
	q.records--
	q.bytes -= size
	if q.records == 0 {
		close(q.empty)
	}
	q.mu.Unlock()
}

// drained is closed once no record is in the buffer.
func (q *buffer) drained() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.empty
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func (q *buffer) state() (records, bytes int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.records, q.bytes
}

// hooks count the errors franz-go retries on its own, which never reach
// a record's promise or a poll: a broker that cannot be reached or
// refuses the bridge's credentials, a consumer group session lost.
type hooks struct{ b *Bridge }

func (h hooks) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil && h.b.errs.add("connect", err) {
		h.b.log.Warn("cannot connect to a Kafka broker", "broker", net.JoinHostPort(meta.Host, fmt.Sprint(meta.Port)), "err", err)
	}
}

func (h hooks) OnGroupManageError(err error) {
	if !errors.Is(err, context.Canceled) && h.b.errs.add("group", err) {
		h.b.log.Warn("consumer group session lost; rejoining", "group", h.b.cfg.Group, "err", err)
	}
}

// kgoLogger sends franz-go's own logs, warnings and up, to slog, each
// message at most once per errorLogEvery: while a broker is down franz-go
// says so on every attempt.
type kgoLogger struct {
	log  *slog.Logger
	gate *errorStats
}

func (l kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if !l.gate.gate("kgo: " + msg) {
		return
	}
	lv := slog.LevelWarn
	if level == kgo.LogLevelError {
		lv = slog.LevelError
	}
	l.log.Log(context.Background(), lv, msg, keyvals...)
}
