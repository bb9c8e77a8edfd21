package bridge_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/bridge"
	"github.com/pushd/pushd/internal/freeport"
	"github.com/pushd/pushd/internal/poll"
)

// outage is how long TestBridge_KafkaOutage keeps Kafka down: 3 s by
// default, 30 s for the long run of docs/performance.md:
//
//	go test ./appliance/bridge -run KafkaOutage -v -bridge.outage 30s
var outage = flag.Duration("bridge.outage", 3*time.Second, "how long TestBridge_KafkaOutage stops Kafka")

// TestBridge_ProduceErrorsAreRetried fails bj's produce requests with
// kfake's faults — NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT after the
// broker wrote the batch, and closed connections (a ControlKey) — while it
// pushes 60 messages for sh: the idempotent producer retries until Kafka
// takes each record once, and the device gets every message once, in
// order.
func TestBridge_ProduceErrorsAreRetried(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	phone := connect(t, sh, "phone-1")
	warm := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh")})
	phone.waitIDs(t, within, []string{warm.ID})

	notLeader := kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "pushd-bridge.bj", Err: kerr.NotLeaderForPartition, Count: 4})
	timedOut := kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "pushd-bridge.bj", Err: kerr.RequestTimedOut, Count: 4})
	var drops atomic.Int32
	kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if drops.Add(1) > 3 {
			kafka.DropControl()
			return nil, nil, false
		}
		kafka.KeepControl()
		return nil, errors.New("connection dropped by the test"), true
	})

	ids := []string{warm.ID}
	for i := range 60 {
		ids = append(ids, mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh"),
			Data: api.Ptr(fmt.Sprint(i))}).ID)
	}
	phone.waitIDs(t, 20*time.Second, ids)
	if got := phone.ids(); !slices.Equal(got, ids) {
		t.Fatalf("order: got %v, pushed %v", got, ids)
	}
	if notLeader.Hits() == 0 || timedOut.Hits() == 0 || drops.Load() < 3 {
		t.Fatalf("faults answered %d, %d and %d produce requests: the test injected nothing", notLeader.Hits(), timedOut.Hits(), drops.Load())
	}
	if n := metric(t, bj, "pushd_bridge_produced_records_total", "result=error"); n != 0 {
		t.Fatalf("%v records failed for good", n)
	}
	if st := deviceState(t, sh, "phone-1"); st.Last != 61 {
		t.Fatalf("sh stored %d messages, want 61: a record reached Kafka twice", st.Last)
	}
}

// TestBridge_FullBufferAnswersFailed holds bj's produce requests inside
// Kafka (kfake's SleepControl) with a buffer of 4 records: the first
// pushes are queued, the next answered failed at once, never blocked;
// once Kafka answers again the queued ones arrive and the failed ones
// never do, and new pushes are queued again.
func TestBridge_FullBufferAnswersFailed(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs(), func(o *regionOpts) {
		o.bridge = func(c *bridge.Config) { c.BufferRecords = 4 }
	})
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	phone := connect(t, sh, "phone-1")
	warm := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh")})
	phone.waitIDs(t, within, []string{warm.ID})

	release := make(chan struct{})
	var releaseOnce sync.Once
	// Released at the end whatever happens: a produce request held in
	// Kafka would hold the bridge's Close up for its CloseTimeout.
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	var held atomic.Int32
	kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kafka.KeepControl()
		held.Add(1)
		kafka.SleepControl(func() { <-release })
		return nil, nil, false
	})
	var queued, failed []string
	var slowest time.Duration
	for i := range 12 {
		start := time.Now()
		resp := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh"), Data: api.Ptr(fmt.Sprint(i))})
		slowest = max(slowest, time.Since(start))
		switch resp.Bridged["sh"] {
		case api.BridgedQueued:
			queued = append(queued, resp.ID)
		case api.BridgedFailed:
			failed = append(failed, resp.ID)
		default:
			t.Fatalf("answer %+v", resp)
		}
	}
	t.Logf("Kafka holding produce requests: %d queued, %d failed, slowest answer %s", len(queued), len(failed), slowest)
	if len(queued) != 4 || len(failed) != 8 {
		t.Fatalf("%d queued, %d failed: want the buffer's 4 queued and the rest failed", len(queued), len(failed))
	}
	if slowest > time.Second {
		t.Fatalf("an answer took %s: a full buffer must not block", slowest)
	}
	if st := bj.node().Bridge.Status(); st.Buffer.Records != 4 || st.To[0].Failed != 8 {
		t.Fatalf("status %+v: want 4 buffered, 8 failed", st)
	}
	// The producer sends its first request within its linger; a busy
	// machine can take a while to.
	poll.Until(t, within, func() error {
		if held.Load() == 0 {
			return errors.New("Kafka holds no produce request yet")
		}
		return nil
	})
	releaseOnce.Do(func() { close(release) })
	phone.waitIDs(t, within, append([]string{warm.ID}, queued...))
	poll.Until(t, within, func() error {
		if n := bj.node().Bridge.Status().Buffer.Records; n != 0 {
			return fmt.Errorf("%d records still buffered", n)
		}
		return nil
	})
	again := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh")})
	if again.Bridged["sh"] != api.BridgedQueued {
		t.Fatalf("after Kafka recovered: %+v", again)
	}
	phone.waitIDs(t, within, append(append([]string{warm.ID}, queued...), again.ID))
}

// TestBridge_KafkaOutage stops Kafka (a kfake with its data on disk,
// started again on the same port after -bridge.outage) while bj takes
// pushes: local pushes to a device connected in bj keep their latency —
// their p99 is measured against a run of the same pushes with Kafka up —
// and the pushes for sh, answered queued, reach sh's devices after Kafka
// returns, each once. The pushes for sh go round the remoteDevices so
// that none of them is owed more than its inbox cap (1,000 unacked) at
// the end of a 30 s outage: a device's backlog past the cap is trimmed,
// Kafka or not (docs/delivery.md). It runs before the package's parallel
// tests rather than beside them: it compares two latency measurements of
// its own, which the others' load would make noise of.
func TestBridge_KafkaOutage(t *testing.T) {
	const remoteDevices = 10
	dir := t.TempDir()
	port := freePort(t)
	start := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(filepath.Join(dir, "kafka")),
			kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	kafka := start()
	brokers := kafka.ListenAddrs()
	bj := startRegion(t, "bj", []string{"sh"}, brokers, func(o *regionOpts) {
		o.bridge = func(c *bridge.Config) { c.BufferRecords = 100_000 }
	})
	sh := startRegion(t, "sh", []string{"bj"}, brokers)
	local := connect(t, bj, "local-1")
	remotes := make([]*device, remoteDevices)
	forSH := make([][]string, remoteDevices) // what each remote device is owed
	for i := range remotes {
		remotes[i] = connect(t, sh, fmt.Sprintf("remote-%d", i))
		warm := mustPushVia(t, bj, api.PushRequest{Devices: []string{remotes[i].id}, Regions: api.RegionList("sh")})
		forSH[i] = append(forSH[i], warm.ID)
	}
	waitRemotes := func(within time.Duration) {
		for i, d := range remotes {
			d.waitIDs(t, within, forSH[i])
		}
	}
	waitRemotes(10 * time.Second)

	// Local pushes at 100/s with one for sh after each, for d; returns
	// the local pushes' latency to the device and how long the push API
	// took to answer the pushes for sh.
	pushed := 0
	run := func(d time.Duration) (lat, answer []time.Duration) {
		sent := map[string]time.Time{}
		var localIDs []string
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
			at := time.Now()
			resp := mustPushVia(t, bj, api.PushRequest{Devices: []string{"local-1"}})
			sent[resp.ID] = at
			localIDs = append(localIDs, resp.ID)
			to := pushed % remoteDevices
			asked := time.Now()
			x := mustPushVia(t, bj, api.PushRequest{Devices: []string{remotes[to].id}, Regions: api.RegionList("sh")})
			answer = append(answer, time.Since(asked))
			if x.Bridged["sh"] != api.BridgedQueued {
				t.Fatalf("push for sh answered %+v", x)
			}
			forSH[to] = append(forSH[to], x.ID)
			pushed++
		}
		poll.Until(t, within, func() error {
			got := map[string]bool{}
			for _, m := range local.received() {
				got[m.ID] = true
			}
			for _, id := range localIDs {
				if !got[id] {
					return fmt.Errorf("local push %s not received", id)
				}
			}
			return nil
		})
		for id, got := range local.receivedAt() {
			if at, ok := sent[id]; ok {
				lat = append(lat, got.Sub(at))
			}
		}
		return lat, answer
	}
	// The baseline runs as long as the outage, so both p99s rest on as
	// many pushes.
	baseline, baselineAnswers := run(*outage)
	waitRemotes(10 * time.Second)
	before := pushed

	kafka.Close()
	down := time.Now()
	during, duringAnswers := run(*outage)
	received := 0
	for _, d := range remotes {
		received += len(d.ids())
	}
	if received != remoteDevices+before {
		t.Fatalf("sh got %d messages while Kafka was down", received-remoteDevices-before)
	}
	kafka = start()
	t.Cleanup(kafka.Close)
	back := time.Now()
	t.Logf("Kafka down %s", back.Sub(down).Round(time.Millisecond))
	waitRemotes(30 * time.Second)
	caughtUp := time.Since(back)

	p99 := func(l []time.Duration) time.Duration {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		return l[len(l)*99/100]
	}
	// A push API that waited for Kafka would take seconds; the slack
	// above 3× is for a busy machine's scheduling.
	worse := func(up, down time.Duration) bool { return down > max(3*up, up+50*time.Millisecond) }
	b, o := p99(baseline), p99(during)
	ba, oa := p99(baselineAnswers), p99(duringAnswers)
	t.Logf("local push → device p99: %s with Kafka up (%d pushes), %s with Kafka down (%d pushes); "+
		"push API answer to a push for sh p99: %s up, %s down; %d pushes for sh delivered within %s after it returned",
		b, len(baseline), o, len(during), ba, oa, pushed-before, caughtUp.Round(time.Millisecond))
	if worse(b, o) {
		t.Fatalf("local p99 %s with Kafka down against %s with it up", o, b)
	}
	if worse(ba, oa) {
		t.Fatalf("pushes for sh answered in %s (p99) with Kafka down against %s with it up", oa, ba)
	}
}

// TestBridge_ConsumerStoppedBeforeCommitting has sh import records whose
// commits Kafka refuses, then stops sh's node: the commit never happened
// though the messages are in sh's Redis. The node started again reads
// them again and imports them again; the inboxes store nothing twice and
// the device's app is handed each message once.
func TestBridge_ConsumerStoppedBeforeCommitting(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	url := sh.node().DeviceURL()
	var where atomic.Pointer[string]
	where.Store(&url)
	phone := connectVia(t, "phone-1", "sh", func(context.Context, string) (string, error) { return *where.Load(), nil })
	warm := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh")})
	phone.waitIDs(t, within, []string{warm.ID})
	poll.Until(t, within, func() error {
		for _, p := range sh.node().Bridge.Status().Partitions {
			if p.Committed > 0 {
				return nil
			}
		}
		return errors.New("the warm-up record is not committed yet")
	})

	refused := kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: "pushd-bridge.sh", Err: kerr.UnknownServerError, Count: -1})
	ids := []string{warm.ID}
	for i := range 20 {
		ids = append(ids, mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh"),
			Data: api.Ptr(fmt.Sprint(i))}).ID)
	}
	phone.waitIDs(t, within, ids)
	poll.Until(t, within, func() error {
		if refused.Hits() == 0 {
			return errors.New("no commit refused yet")
		}
		return nil
	})
	sh.Kill(t, 0)
	refused.Remove()
	restarted := sh.Restart(t, 0)
	// A new string: the device's dispatch may be reading the old one.
	again := restarted.DeviceURL()
	where.Store(&again)
	poll.Until(t, 15*time.Second, func() error {
		if n := gather(t, restarted.Registry(), "pushd_bridge_consumed_records_total", "outcome=repeat"); n < 20 {
			return fmt.Errorf("the restarted node imported %v records again, want the 20 not committed", n)
		}
		return nil
	})
	after := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh")})
	ids = append(ids, after.ID)
	phone.waitIDs(t, 15*time.Second, ids)
	if st := deviceState(t, sh, "phone-1"); st.Last != 22 {
		t.Fatalf("sh stored %d messages, want 22: an import stored a message twice", st.Last)
	}
}

// freePort is a loopback port no other test will be given, for a Kafka
// that must come back on the same one after it was stopped.
func freePort(t testing.TB) int {
	t.Helper()
	ports, err := freeport.Take(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// TestBridge_CloseIsBoundedWhenKafkaHangs stops a bridge whose produce
// requests Kafka never answers: Close returns after its CloseTimeout and
// a second more at most, saying how many records it dropped, and counts
// them as produce errors.
func TestBridge_CloseIsBoundedWhenKafkaHangs(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs(), func(o *regionOpts) {
		o.bridge = func(c *bridge.Config) { c.CloseTimeout = 500 * time.Millisecond }
	})
	kafka.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		kafka.KeepControl()
		kafka.SleepControl(func() { <-release })
		return nil, nil, false
	})
	for range 3 {
		if r := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh")}); r.Bridged["sh"] != api.BridgedQueued {
			t.Fatalf("answer %+v", r)
		}
	}
	start := time.Now()
	err := bj.node().Bridge.Close(context.Background())
	took := time.Since(start)
	t.Logf("Close with Kafka hanging: %s, %v", took, err)
	if err == nil || !strings.Contains(err.Error(), "3 records still buffered") {
		t.Fatalf("Close: %v, want 3 records dropped", err)
	}
	if took > 3*time.Second {
		t.Fatalf("Close took %s with a close timeout of 500ms", took)
	}
	if st := bj.node().Bridge.Status(); st.To[0].ProduceErrors != 3 || st.Buffer.Records != 0 {
		t.Fatalf("status after Close %+v: want the 3 dropped counted as produce errors", st)
	}
}
