package bridge_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta"
)

// TestBridge_RecordsForOtherRegionsAreSkippedUndecoded has bj push for
// gz (a peer that is not running) and for sh, and writes records for gz
// whose values are garbage straight into bj's topic: sh skips every gz
// record on its headers and decodes the value of its own records only,
// as its metrics show.
func TestBridge_RecordsForOtherRegionsAreSkippedUndecoded(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh", "gz"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj", "gz"}, kafka.ListenAddrs())
	phone := connect(t, sh, "phone-1")

	var forSH []string
	for i := range 10 {
		mustPushVia(t, bj, api.PushRequest{Devices: []string{fmt.Sprint("gz-", i)}, Regions: api.RegionList("gz")})
		forSH = append(forSH, mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh")}).ID)
	}
	cl := rawClient(t, kafka)
	garbage := good(time.Now())
	garbage.regions = []string{"gz"}
	for range 5 {
		produce(t, cl, "pushd-bridge.bj", garbage, []byte("not a frame at all"))
	}
	phone.waitIDs(t, within, forSH)
	poll.Until(t, within, func() error {
		if n := metric(t, sh, "pushd_bridge_consumed_records_total", "outcome=skipped_region"); n != 15 {
			return fmt.Errorf("sh skipped %v records, want the 15 for gz", n)
		}
		return nil
	})
	if n := metric(t, sh, "pushd_bridge_decoded_values_total"); n != 10 {
		t.Fatalf("sh decoded %v values, want only its own 10", n)
	}
	if n := metric(t, sh, "pushd_bridge_consumed_records_total", "outcome=invalid"); n != 0 {
		t.Fatalf("sh found %v invalid records: it looked at values not for it", n)
	}
}

// TestBridge_DegradeShedsImportedPushes sets sh shedding low pushes: low
// pushes imported from bj are dropped and counted, others delivered; bj,
// which does not degrade, takes them all.
func TestBridge_DegradeShedsImportedPushes(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	phone := connect(t, sh, "phone-1")
	if _, err := sh.Raft.Apply(context.Background(), raftmeta.SetDegrade(raftmeta.Degrade{Priority: raftmeta.PriorityLow, Reason: "test"})); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, within, func() error {
		if _, shed := sh.node().Sheds(1, ""); !shed {
			return fmt.Errorf("sh does not shed low yet")
		}
		return nil
	})
	var delivered []string
	for i := range 6 {
		prio := []string{"low", "normal"}[i%2]
		resp := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Priority: api.Ptr(prio), Regions: api.RegionList("sh")})
		if resp.Bridged["sh"] != api.BridgedQueued {
			t.Fatalf("bj answered %+v: bj does not degrade", resp)
		}
		if prio == "normal" {
			delivered = append(delivered, resp.ID)
		}
	}
	phone.waitIDs(t, within, delivered)
	poll.Until(t, within, func() error {
		if n := metric(t, sh, "pushd_bridge_consumed_records_total", "outcome=shed"); n != 3 {
			return fmt.Errorf("sh shed %v imported pushes, want 3", n)
		}
		return nil
	})
	if st := deviceState(t, sh, "phone-1"); st.Last != 3 {
		t.Fatalf("sh stored %d messages, want the 3 not shed", st.Last)
	}
}

// TestBridge_BadRecordsAreSkippedAndChangeNothing writes records of every
// kind of damage into bj's topic between two good ones: sh counts each
// as invalid (or dropped, for an app it lacks or a message past its
// TTL), stores nothing for them, and goes on to deliver the good one.
func TestBridge_BadRecordsAreSkippedAndChangeNothing(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs()) // creates its topic
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	phone := connect(t, sh, "phone-1")
	cl := rawClient(t, kafka)
	now := time.Now()
	value := func(r *route) []byte { return encode(r, []byte("payload")) }

	first := good(now)
	produce(t, cl, "pushd-bridge.bj", first, value(first))
	bad := []struct {
		name    string
		headers []kgo.RecordHeader
		value   []byte
		outcome string
	}{
		{"no headers", nil, []byte("x"), "invalid"},
		{"a routing header twice", append(good(now).headers(), kgo.RecordHeader{Key: "pushd-id", Value: []byte("m2")}), value(good(now)), "invalid"},
		{"an unknown routing header", append(good(now).headers(), kgo.RecordHeader{Key: "pushd-trace", Value: []byte("t")}), value(good(now)), "invalid"},
		{"a filter on a device record", append(good(now).headers(), kgo.RecordHeader{Key: "pushd-filter", Value: []byte(`{"tags":["vip"]}`)}), value(good(now)), "invalid"},
		{"an empty filter", append(good(now).headers(), kgo.RecordHeader{Key: "pushd-filter", Value: []byte("{}")}), value(good(now)), "invalid"},
		{"a filter with an unknown field", append(good(now).headers(), kgo.RecordHeader{Key: "pushd-filter", Value: []byte(`{"colour":["red"]}`)}), value(good(now)), "invalid"},
		{"a filter the push API refuses", append(good(now).headers(), kgo.RecordHeader{Key: "pushd-filter", Value: []byte(`{"tags":["not an id"]}`)}), value(good(now)), "invalid"},
		{"a newer version", with(good(now), "pushd-v", "2"), value(good(now)), "invalid"},
		{"a bad device id", with(good(now), "pushd-targets", "phone-1,bad id"), value(good(now)), "invalid"},
		{"a device twice", with(good(now), "pushd-targets", "phone-1,phone-1"), value(good(now)), "invalid"},
		{"an unknown kind", with(good(now), "pushd-kind", "cohort"), value(good(now)), "invalid"},
		{"a broadcast with targets", with(good(now), "pushd-kind", "broadcast"), value(good(now)), "invalid"},
		{"no ttl", without(good(now), "pushd-ttl"), value(good(now)), "invalid"},
		{"a negative ttl", with(good(now), "pushd-ttl", "-5"), value(good(now)), "invalid"},
		{"created not a number", with(good(now), "pushd-created", "yesterday"), value(good(now)), "invalid"},
		{"an empty priority", with(good(now), "pushd-priority", ""), value(good(now)), "invalid"},
		{"its origin among its regions", with(good(now), "pushd-regions", "sh,bj"), value(good(now)), "invalid"},
		{"region all", with(good(now), "pushd-regions", "all"), value(good(now)), "invalid"},
		{"a value that is not a frame", good(now).headers(), []byte{1, 2, 3}, "invalid"},
		{"a value of another id", good(now).headers(), value(withID(good(now), "other")), "invalid"},
		{"a value with bytes after it", good(now).headers(), append(value(good(now)), 0), "invalid"},
		{"an app sh does not have", with(good(now), "pushd-app", "nosuchapp"), value(good(now)), "unknown_app"},
		{"a message past its TTL", with(good(now), "pushd-created", fmt.Sprint(now.Add(-time.Hour).UnixMilli())), value(good(now)), "expired"},
	}
	for _, b := range bad {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "pushd-bridge.bj", Key: []byte("k"), Headers: b.headers, Value: b.value}).FirstErr(); err != nil {
			t.Fatalf("%s: %v", b.name, err)
		}
	}
	last := withID(good(now), "m-last")
	produce(t, cl, "pushd-bridge.bj", last, value(last))

	phone.waitIDs(t, within, []string{first.id, last.id})
	want := map[string]int{}
	for _, b := range bad {
		want[b.outcome]++
	}
	poll.Until(t, within, func() error {
		for outcome, n := range want {
			if got := metric(t, sh, "pushd_bridge_consumed_records_total", "outcome="+outcome); got != float64(n) {
				return fmt.Errorf("%s: %v records, want %d", outcome, got, n)
			}
		}
		return nil
	})
	if st := deviceState(t, sh, "phone-1"); st.Last != 2 {
		t.Fatalf("sh stored %d messages for phone-1, want the 2 good ones", st.Last)
	}
	if st := deviceState(t, sh, "nosuchapp"); st.Last != 0 {
		t.Fatalf("something was stored under the unknown app")
	}
}

// TestBridge_ImportWaitsForRedis stops sh's Redis: records for sh wait,
// uncommitted, and are delivered once Redis is back; pushes in bj are
// unaffected throughout.
func TestBridge_ImportWaitsForRedis(t *testing.T) {
	t.Parallel()
	kafka := startKafka(t)
	bj := startRegion(t, "bj", []string{"sh"}, kafka.ListenAddrs())
	sh := startRegion(t, "sh", []string{"bj"}, kafka.ListenAddrs())
	phone := connect(t, sh, "phone-1")
	warm := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("sh")})
	phone.waitIDs(t, within, []string{warm.ID})

	sh.Redis.Stop()
	var ids []string
	for range 5 {
		resp := mustPushVia(t, bj, api.PushRequest{Devices: []string{"phone-1"}, Regions: api.RegionList("bj", "sh")})
		if !resp.Stored || resp.Bridged["sh"] != api.BridgedQueued {
			t.Fatalf("bj answered %+v while sh's Redis is down", resp)
		}
		ids = append(ids, resp.ID)
	}
	poll.Until(t, within, func() error {
		if n := metric(t, sh, "pushd_bridge_errors_total", "kind=import"); n == 0 {
			return fmt.Errorf("no import error yet")
		}
		return nil
	})
	committed := func() (c int64) {
		for _, p := range sh.node().Bridge.Status().Partitions {
			c += max(p.Committed, 0)
		}
		return c
	}
	before := committed()
	if got := phone.ids(); len(got) != 1 {
		t.Fatalf("the device got %v while Redis was down: nothing may be delivered unstored", got)
	}
	sh.Redis.Restart()
	phone.waitIDs(t, 15*time.Second, append([]string{warm.ID}, ids...))
	poll.Until(t, within, func() error {
		if after := committed(); after != before+5 {
			return fmt.Errorf("committed %d records after Redis came back, want 5", after-before)
		}
		return nil
	})
	if st := deviceState(t, sh, "phone-1"); st.Last != 6 {
		t.Fatalf("sh stored %d, want 6", st.Last)
	}
	if strings.Contains(sh.node().Bridge.Status().LastError, "commit") {
		t.Fatalf("a commit failed: %s", sh.node().Bridge.Status().LastError)
	}
}
