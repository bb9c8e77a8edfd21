package bridge_test

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lesismal/nbio/logging"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/appliance/bridge"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta"
)

func init() {
	logging.SetLevel(logging.LevelNone)
	redis.SetLogger(quietRedis{})
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// within bounds every wait for something to arrive or be counted: a poll
// that passes returns at once, and under -race with the package's tests
// in parallel on a busy machine a region's first import has taken more
// than 10 s.
const within = 30 * time.Second

// The app every test region has, with the same credentials in each: a
// business creates its app in every region it pushes to.
const (
	testApp    = "news"
	testAPIKey = "test-api-key-0123456789"
)

var testSecret = bytes.Repeat([]byte("s"), 32)

// startKafka starts an in-process Kafka (kfake) of one broker that
// creates topics of 4 partitions on demand, and closes it with the test.
func startKafka(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(4)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// testRegion is one region: its own redis-server, Raft and one node with
// a bridge to the others through kafka.
type testRegion struct {
	name string
	*appliancetest.Region

	mu     sync.Mutex
	client *api.Client // for url
	url    string
}

// pushClient is a push API client of r's node, kept while the node's
// address is the same: a client per call would open a connection per
// call.
func (r *testRegion) pushClient(t testing.TB) *api.Client {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if url := r.node().PushURL; url != r.url {
		cl, err := api.NewClient(url, testAPIKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.client, r.url = cl, url
	}
	return r.client
}

// node is the region's node.
func (r *testRegion) node() *appliancetest.Node { return r.Nodes[0] }

// regionOpts change how startRegion builds a region.
type regionOpts struct {
	bridge   func(*bridge.Config)
	config   func(*appliance.Config)
	noApp    bool
	bridged  bool               // false: no bridge at all
	commands []raftmeta.Command // applied after the test app is created
}

// startRegion starts region name, bridged to peers through the brokers.
func startRegion(t testing.TB, name string, peers []string, brokers []string, opts ...func(*regionOpts)) *testRegion {
	t.Helper()
	o := regionOpts{bridged: true}
	for _, f := range opts {
		f(&o)
	}
	var cmds []raftmeta.Command
	if !o.noApp {
		cmds = append(cmds, raftmeta.CreateApp(raftmeta.App{ID: testApp, Secrets: []raftmeta.Secret{{KeyID: "k1", Secret: testSecret}},
			APIKeys: []raftmeta.APIKey{{ID: "key-1", Hash: raftmeta.HashKey(testAPIKey)}}}))
	}
	ro := appliancetest.RegionOptions{
		Commands: append(cmds, o.commands...),
		Config: func(_ int, cfg *appliance.Config) {
			cfg.Region = name
			if o.config != nil {
				o.config(cfg)
			}
		},
	}
	if o.bridged {
		ro.Bridge = func(_ int, node *appliance.Node) (*bridge.Bridge, error) {
			cfg := bridge.Config{Brokers: brokers, Peers: peers, SessionTimeout: 6 * time.Second}
			if o.bridge != nil {
				o.bridge(&cfg)
			}
			return bridge.New(node, cfg, nil)
		}
	}
	return &testRegion{name: name, Region: appliancetest.StartRegion(t, 1, ro)}
}

// pushVia sends req through r's push API (the test app, data "x" unless
// given).
func pushVia(t testing.TB, r *testRegion, req api.PushRequest) (*api.PushResponse, error) {
	t.Helper()
	if req.App == nil {
		req.App = api.Ptr(testApp)
	}
	if req.Data == nil && req.DataBase64 == nil {
		req.Data = api.Ptr("x")
	}
	return r.pushClient(t).Push(context.Background(), &req)
}

// mustPushVia is pushVia failing the test on an error answer.
func mustPushVia(t testing.TB, r *testRegion, req api.PushRequest) *api.PushResponse {
	t.Helper()
	resp, err := pushVia(t, r, req)
	if err != nil {
		t.Fatalf("push via %s: %v", r.name, err)
	}
	return resp
}

// deviceState reads a device of the test app in r.
func deviceState(t testing.TB, r *testRegion, device string) *api.DeviceState {
	t.Helper()
	st, err := r.pushClient(t).Device(context.Background(), testApp, device)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// device is an SDK client of the test app, recording what its app is
// handed.
type device struct {
	id     string
	c      *client.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	msgs     []client.Message
	at       []time.Time // when each of msgs was handed over
	welcomes []client.Welcome
	lastErr  error
}

// connect runs device id against r's node until the test's end, and
// waits until it is connected.
func connect(t testing.TB, r *testRegion, id string) *device {
	t.Helper()
	return connectAs(t, r, id, profile{})
}

// profile is who a device says it is: its token's user and tags, its
// HELLO's platform and version.
type profile struct {
	user              string
	tags              []string
	platform, version string
}

// connectAs is connect for a device of profile p.
func connectAs(t testing.TB, r *testRegion, id string, p profile) *device {
	t.Helper()
	url := r.node().DeviceURL()
	return connectWith(t, id, r.name, p, func(context.Context, string) (string, error) { return url, nil })
}

// connectVia runs device id with dispatch choosing the URL of every
// connect (the SDK's Dispatch), as a phone's region-level dispatch does,
// and waits until it is connected; where names it in failures.
func connectVia(t testing.TB, id, where string, dispatch func(context.Context, string) (string, error)) *device {
	t.Helper()
	return connectWith(t, id, where, profile{}, dispatch)
}

func connectWith(t testing.TB, id, where string, p profile, dispatch func(context.Context, string) (string, error)) *device {
	t.Helper()
	d := &device{id: id, done: make(chan struct{})}
	tok, err := token.Issue(token.Claims{App: testApp, Device: id, User: p.user, Tags: p.tags, KeyID: "k1",
		Expires: time.Now().Add(time.Hour).Unix()}, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{
		Dispatch: dispatch, App: testApp, Device: id, Token: tok, Platform: p.platform, Version: p.version,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		OnMessage: func(m client.Message) {
			d.mu.Lock()
			d.msgs, d.at = append(d.msgs, m), append(d.at, time.Now())
			d.mu.Unlock()
		},
		OnWelcome:    func(w client.Welcome) { d.mu.Lock(); d.welcomes = append(d.welcomes, w); d.mu.Unlock() },
		OnDisconnect: func(err error) { d.mu.Lock(); d.lastErr = err; d.mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.c, d.cancel = c, cancel
	go func() {
		defer close(d.done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(d.stop)
	poll.Until(t, within, func() error {
		if !c.Connected() {
			d.mu.Lock()
			defer d.mu.Unlock()
			return fmt.Errorf("%s not connected to %s (last disconnect: %v)", id, where, d.lastErr)
		}
		return nil
	})
	return d
}

// welcomes is every WELCOME the device got, in order.
func (d *device) welcomesSeen() []client.Welcome {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]client.Welcome(nil), d.welcomes...)
}

func (d *device) stop() {
	d.cancel()
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
	}
}

// received is what the app was handed, in order.
func (d *device) received() []client.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]client.Message(nil), d.msgs...)
}

// receivedAt is when the app was handed each message, by id (the first
// time).
func (d *device) receivedAt() map[string]time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]time.Time, len(d.msgs))
	for i, m := range d.msgs {
		if _, ok := out[m.ID]; !ok {
			out[m.ID] = d.at[i]
		}
	}
	return out
}

// ids is the ids of what the app was handed, in order.
func (d *device) ids() []string {
	var out []string
	for _, m := range d.received() {
		out = append(out, m.ID)
	}
	return out
}

// waitIDs waits until the app was handed exactly want (in any order),
// each once, and nothing else appears for a moment after.
func (d *device) waitIDs(t testing.TB, timeout time.Duration, want []string) {
	t.Helper()
	poll.Until(t, timeout, func() error { return sameSet(d.ids(), want) })
}

// sameSet says how got differs from want as sets, and names repeats.
func sameSet(got, want []string) error {
	seen := map[string]int{}
	for _, id := range got {
		seen[id]++
	}
	var missing, dup, extra []string
	wanted := map[string]bool{}
	for _, id := range want {
		wanted[id] = true
		if seen[id] == 0 {
			missing = append(missing, id)
		}
	}
	for id, n := range seen {
		if n > 1 {
			dup = append(dup, id)
		}
		if !wanted[id] {
			extra = append(extra, id)
		}
	}
	if len(missing)+len(dup)+len(extra) == 0 {
		return nil
	}
	sort.Strings(missing)
	sort.Strings(dup)
	sort.Strings(extra)
	return fmt.Errorf("%d of %d missing %s, repeated %v, unexpected %v", len(missing), len(want), short(missing), dup, extra)
}

func short(ids []string) string {
	if len(ids) > 5 {
		return strings.Join(ids[:5], ",") + ",…"
	}
	return strings.Join(ids, ",")
}

// metric reads a counter or gauge of r's node by name and labels (name
// "a" with labels "k=v" …), 0 when absent.
func metric(t testing.TB, r *testRegion, name string, labels ...string) float64 {
	t.Helper()
	return gather(t, r.node().Registry(), name, labels...)
}

func gather(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		want[k] = v
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// rawClient is a plain Kafka client on c, for tests that read or write
// the topics themselves.
func rawClient(t testing.TB, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// endOffset is the end offset of a partition of topic: the records it
// ever held.
func endOffset(t testing.TB, cl *kgo.Client, topic string, partition int32) int64 {
	t.Helper()
	req := kmsg.NewPtrListOffsetsRequest()
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition, rp.Timestamp = partition, -1 // -1: the latest offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("list offsets of %s/%d: %v", topic, partition, err)
	}
	p := resp.Topics[0].Partitions[0]
	if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
		t.Fatalf("list offsets of %s/%d: %v", topic, partition, err)
	}
	return p.Offset
}

// route is a record's headers, written by hand for tests that produce
// records themselves (the package's own encoder is what is tested).
type route struct {
	id, origin, kind, app, business, priority string
	regions, targets                          []string
	created                                   time.Time
	ttl                                       time.Duration
}

// good is a valid record from bj for phone-1 in sh.
func good(now time.Time) *route {
	return &route{id: "m-" + fmt.Sprint(now.UnixNano()), origin: "bj", kind: "devices", app: testApp, priority: "normal",
		regions: []string{"sh"}, targets: []string{"phone-1"}, created: now, ttl: time.Minute}
}

func withID(r *route, id string) *route { r.id = id; return r }

func (r *route) headers() []kgo.RecordHeader {
	h := []kgo.RecordHeader{}
	add := func(k, v string) { h = append(h, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	add("pushd-v", "1")
	add("pushd-id", r.id)
	add("pushd-origin", r.origin)
	add("pushd-regions", strings.Join(r.regions, ","))
	add("pushd-kind", r.kind)
	add("pushd-app", r.app)
	if len(r.targets) > 0 {
		add("pushd-targets", strings.Join(r.targets, ","))
	}
	if r.business != "" {
		add("pushd-business", r.business)
	}
	add("pushd-priority", r.priority)
	add("pushd-created", fmt.Sprint(r.created.UnixMilli()))
	add("pushd-ttl", fmt.Sprint(r.ttl.Milliseconds()))
	return h
}

// with is r's headers with key's value replaced.
func with(r *route, key, value string) []kgo.RecordHeader {
	h := r.headers()
	for i := range h {
		if h[i].Key == key {
			h[i].Value = []byte(value)
		}
	}
	return h
}

// without is r's headers without key.
func without(r *route, key string) []kgo.RecordHeader {
	var h []kgo.RecordHeader
	for _, x := range r.headers() {
		if x.Key != key {
			h = append(h, x)
		}
	}
	return h
}

// encode is r's message as the value: a PUSH frame.
func encode(r *route, payload []byte) []byte {
	p := wire.Push{ID: r.id, Business: r.business, Created: uint64(r.created.UnixMilli()), Payload: payload}
	p.Priority, _ = wire.ParsePriority(r.priority)
	return wire.AppendPush(nil, &p)
}

// produce writes one record to topic and waits for Kafka to take it.
func produce(t testing.TB, cl *kgo.Client, topic string, r *route, value []byte) {
	t.Helper()
	rec := &kgo.Record{Topic: topic, Key: []byte("k"), Headers: r.headers(), Value: value}
	if err := cl.ProduceSync(context.Background(), rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
}
