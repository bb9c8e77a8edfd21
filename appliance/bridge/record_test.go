package bridge

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/streams"
)

func testRoute(kind appliance.TargetKind, targets ...string) Route {
	return Route{ID: "0193c2a48b7f00014e2a9c3d5f61b7a2", Origin: "bj", Regions: []string{"sh", "gz"}, Kind: kind,
		App: "news", Targets: targets, Business: "chat", Priority: wire.PriorityHigh,
		Created: time.UnixMilli(1_765_000_000_123), TTL: 90 * time.Second}
}

// filtered is r with a filter of every kind of criterion.
func filtered(r Route) Route {
	r.Filter = &api.Filter{Platforms: []string{"ios"}, Versions: []api.VersionMatch{{Prefix: api.Ptr("3.")}, {Min: api.Ptr("2.1"), Max: api.Ptr("2.9")}},
		Businesses: []string{"chat"}, Tags: []string{"vip", "beta"}}
	return r
}

func TestRoute_HeadersRoundTrip(t *testing.T) {
	for _, r := range []Route{
		testRoute(appliance.TargetDevices, "phone-1", "phone-2"),
		testRoute(appliance.TargetUsers, "alice", "bob"),
		testRoute(appliance.TargetGroup, "room-7"),
		filtered(testRoute(appliance.TargetGroup, "room-7")),
		testRoute(appliance.TargetBroadcast),
		filtered(testRoute(appliance.TargetBroadcast)),
		func() Route { r := testRoute(appliance.TargetDevices, "d"); r.Business = ""; return r }(),
	} {
		got, err := DecodeRoute(appendHeaders(nil, &r))
		if err != nil {
			t.Fatalf("%s: %v", r.Kind, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("%s: decoded %+v, encoded %+v", r.Kind, got, r)
		}
		payload, err := decodeValue(&got, encodeValue(&r, []byte("hello")))
		if err != nil || string(payload) != "hello" {
			t.Fatalf("%s: value %q, %v", r.Kind, payload, err)
		}
	}
}

func TestRoute_OtherHeadersAreLeftAlone(t *testing.T) {
	r := testRoute(appliance.TargetBroadcast)
	h := append([]kgo.RecordHeader{{Key: "traceparent", Value: []byte("00-abc")}, {Key: "traceparent", Value: []byte("again")}},
		appendHeaders(nil, &r)...)
	if _, err := DecodeRoute(h); err != nil {
		t.Fatalf("headers without the pushd- prefix are not the bridge's: %v", err)
	}
}

// TestExport_RecordsKeepEachDeviceOnOneKey splits pushes to many devices
// into records: every device is in exactly one record, always under the
// same key (so on the same partition, in order), at most one record per
// key shard, and the records share one value.
func TestExport_RecordsKeepEachDeviceOnOneKey(t *testing.T) {
	b := &Bridge{region: "bj", topic: "pushd-bridge.bj"}
	var devices []string
	for i := range 500 {
		devices = append(devices, "phone-"+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	keyOf := map[string]string{}
	for _, split := range [][]string{devices, devices[:7], devices[100:101], devices[250:]} {
		e := Export{App: "news", Kind: appliance.TargetDevices, Targets: split, Regions: []string{"sh"},
			Msg: streams.Message{ID: "m1", Priority: streams.PriorityNormal, Created: time.Now(), TTL: time.Minute, Payload: []byte("p")}}
		recs, size := b.records(e, e.Regions)
		if len(recs) > keyShards {
			t.Fatalf("%d records for %d devices, at most %d", len(recs), len(split), keyShards)
		}
		var seen []string
		var total int64
		for _, rec := range recs {
			total += recordSize(rec)
			if &rec.Value[0] != &recs[0].Value[0] {
				t.Fatal("records of one push carry copies of the value")
			}
			r, err := DecodeRoute(rec.Headers)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range r.Targets {
				if k, ok := keyOf[d]; ok && k != string(rec.Key) {
					t.Fatalf("%s under key %s, earlier under %s", d, rec.Key, k)
				}
				keyOf[d] = string(rec.Key)
				seen = append(seen, d)
			}
		}
		if total != size {
			t.Fatalf("records weigh %d, records() said %d", total, size)
		}
		slices.Sort(seen)
		want := slices.Clone(split)
		slices.Sort(want)
		if !slices.Equal(seen, want) {
			t.Fatalf("records name %d devices, the push %d", len(seen), len(want))
		}
	}
}

// FuzzRecord feeds arbitrary headers (encoded as key length, key, value
// length, value, repeated) and values to the consumer's decoders: they
// never panic, every refusal is ErrRecord, and what they accept encodes
// back to headers and a value that decode the same.
func FuzzRecord(f *testing.F) {
	enc := func(hs []kgo.RecordHeader) []byte {
		var b []byte
		for _, h := range hs {
			b = append(b, byte(len(h.Key)))
			b = append(b, h.Key...)
			b = append(b, byte(len(h.Value)))
			b = append(b, h.Value...)
		}
		return b
	}
	for _, r := range []Route{testRoute(appliance.TargetDevices, "a", "b"), testRoute(appliance.TargetUsers, "u"), testRoute(appliance.TargetGroup, "g"),
		testRoute(appliance.TargetBroadcast), filtered(testRoute(appliance.TargetBroadcast))} {
		f.Add(enc(appendHeaders(nil, &r)), encodeValue(&r, []byte("payload")))
	}
	r := testRoute(appliance.TargetDevices, "a")
	f.Add(enc(append(appendHeaders(nil, &r), kgo.RecordHeader{Key: "pushd-filter", Value: []byte("{}")})), []byte{1, 3})
	f.Add([]byte{7, 'p', 'u', 's', 'h', 'd', '-', 'v', 1, '2'}, []byte{})
	f.Fuzz(func(t *testing.T, raw, value []byte) {
		var hs []kgo.RecordHeader
		for len(raw) > 0 {
			n := int(raw[0])
			raw = raw[1:]
			if n > len(raw) {
				break
			}
			key := string(raw[:n])
			raw = raw[n:]
			if len(raw) == 0 {
				hs = append(hs, kgo.RecordHeader{Key: key})
				break
			}
			m := min(int(raw[0]), len(raw)-1)
			hs = append(hs, kgo.RecordHeader{Key: key, Value: raw[1 : 1+m]})
			raw = raw[1+m:]
		}
		r, err := DecodeRoute(hs)
		if err != nil {
			if !errors.Is(err, ErrRecord) {
				t.Fatalf("error %v is not ErrRecord", err)
			}
			return
		}
		again, err := DecodeRoute(appendHeaders(nil, &r))
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-encoded headers decode to %+v (%v), first %+v", again, err, r)
		}
		payload, err := decodeValue(&r, value)
		if err != nil {
			if !errors.Is(err, ErrRecord) {
				t.Fatalf("value error %v is not ErrRecord", err)
			}
			return
		}
		if p2, err := decodeValue(&r, encodeValue(&r, payload)); err != nil || !slices.Equal(p2, payload) {
			t.Fatalf("re-encoded value decodes to %q (%v), first %q", p2, err, payload)
		}
	})
}
