package bridge

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/streams"
)

// Export is a push this region's push API accepted for other regions.
type Export struct {
	App  string
	Kind appliance.TargetKind
	// Targets are the device ids (TargetDevices), the user ids
	// (TargetUsers) or the one group name (TargetGroup); none for a
	// broadcast.
	Targets []string
	// Filter is a group or broadcast push's filter, as the push API
	// checked it (appliance.ParseFilter); nil for none.
	Filter *api.Filter
	// Msg is the message as the origin accepted it: its id, business,
	// priority, creation time, TTL and payload travel; MaxLen does not
	// (each region applies its own cap).
	Msg streams.Message
	// Regions are the other regions to send it to, each one of Peers.
	Regions []string
}

// Export hands e to Kafka, for its regions, and says per region whether
// it is on its way (api.BridgedQueued) or not (api.BridgedFailed). It
// never waits for Kafka: the message's records go into the producer's
// buffer, all of them or none (BufferRecords, BufferBytes), and Kafka
// takes them when it can, with retries while it cannot. A region not in
// Peers is failed.
func (b *Bridge) Export(e Export) map[string]string {
	out := make(map[string]string, len(e.Regions))
	regions := make([]string, 0, len(e.Regions))
	for _, r := range e.Regions {
		if _, ok := b.to[r]; ok && !slices.Contains(regions, r) {
			regions = append(regions, r)
		} else {
			out[r] = api.BridgedFailed
		}
	}
	if len(regions) == 0 {
		return out
	}
	recs, size := b.records(e, regions)
	status := api.BridgedFailed
	if !b.closing.Load() && b.buffer.reserve(int64(len(recs)), size) {
		status = api.BridgedQueued
		for _, r := range regions {
			b.to[r].buffered.Add(int64(len(recs)))
		}
		promise := func(r *kgo.Record, err error) { b.produced(r, err, regions) }
		for _, r := range recs {
			b.prod.TryProduce(context.Background(), r, promise)
		}
	}
	for _, r := range regions {
		out[r] = status
		b.to[r].count(status)
	}
	return out
}

// records builds e's records: one per key shard of its devices or users,
// one for a group or broadcast; they share one encoded value. size is what
// they weigh in the buffer.
func (b *Bridge) records(e Export, regions []string) ([]*kgo.Record, int64) {
	route := Route{ID: e.Msg.ID, Origin: b.region, Regions: regions, Kind: e.Kind, App: e.App,
		Business: e.Msg.Business, Priority: wire.Priority(e.Msg.Priority),
		Created: e.Msg.Created.Truncate(time.Millisecond), TTL: e.Msg.TTL.Truncate(time.Millisecond), Filter: e.Filter}
	perTarget := e.Kind == appliance.TargetDevices || e.Kind == appliance.TargetUsers
	if !perTarget {
		route.Targets = e.Targets
	}
	value := encodeValue(&route, e.Msg.Payload)
	var recs []*kgo.Record
	add := func(key string, r *Route) {
		recs = append(recs, &kgo.Record{Topic: b.topic, Key: []byte(key), Value: value, Headers: appendHeaders(nil, r)})
	}
	if !perTarget {
		add(e.App+"/"+e.Kind.String()+"/"+groupOf(&route), &route)
	} else {
		var byShard [keyShards][]string
		for _, target := range e.Targets {
			s := shardOf(e.App, target)
			byShard[s] = append(byShard[s], target)
		}
		for s, targets := range byShard {
			if len(targets) == 0 {
				continue
			}
			r := route
			r.Targets = targets
			add(e.App+"/"+strconv.Itoa(s), &r)
		}
	}
	var size int64
	for _, r := range recs {
		size += recordSize(r)
	}
	return recs, size
}

// recordSize is a record's weight as franz-go's buffer counts it.
func recordSize(r *kgo.Record) int64 {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

// produced is the promise of every exported record: Kafka took it, or
// failed it for good (retries are unbounded, so only an error no retry
// can fix, or the producer closing, ends up here).
func (b *Bridge) produced(r *kgo.Record, err error, regions []string) {
	b.buffer.release(recordSize(r))
	for _, reg := range regions {
		b.to[reg].record(err)
	}
	if err != nil {
		id := ""
		for _, h := range r.Headers {
			if h.Key == hdrID {
				id = string(h.Value)
			}
		}
		if b.errs.add("produce", err) {
			b.log.Error("a bridged record is lost: Kafka refused it for good", "id", id, "regions", regions, "err", err)
		}
	}
}
