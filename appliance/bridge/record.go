package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
)

// A bridge record is one pushed message for some of its targets, on its
// way from the region whose push API accepted it (its origin) to other
// regions. Its headers carry every routing field, so a consuming region
// decides from them alone whether the record is for it, and decodes the
// value only when it is:
//
//	pushd-v         "1"
//	pushd-id        the message id (the device-side dedupe key)
//	pushd-origin    the origin region
//	pushd-regions   the regions the record is for, comma separated
//	pushd-kind      devices | users | group | broadcast
//	pushd-app       the app id
//	pushd-targets   the device ids (devices), the user ids (users) or the
//	                group (group), comma separated; absent for a broadcast
//	pushd-filter    a group or broadcast push's filter, as the push API's
//	                JSON "filter" object; absent for none
//	pushd-business  the business; absent for none
//	pushd-priority  high | normal | low
//	pushd-created   unix milliseconds when the origin accepted the push
//	pushd-ttl       the message's TTL in milliseconds
//
// The value is the message as a wire PUSH frame (seq 0, the group's name
// for a group message), the format devices read; its id, business,
// priority and creation time must match the headers'.
//
// A device push is split by target: a device always falls in the same
// one of keyShards shards, a record carries the devices of one shard and
// is keyed app/shard, so Kafka's key partitioner keeps each device's
// records in one partition, in the order they were produced. A push to
// users is split the same way by user.
//
// Decoding refuses, with ErrRecord, any header it does not know that
// starts with "pushd-" (a routing field a later version added must not be
// ignored), a known header given twice, and every value out of its range;
// headers without the prefix are left to others.

// Header keys.
const (
	hdrVersion  = "pushd-v"
	hdrID       = "pushd-id"
	hdrOrigin   = "pushd-origin"
	hdrRegions  = "pushd-regions"
	hdrKind     = "pushd-kind"
	hdrApp      = "pushd-app"
	hdrTargets  = "pushd-targets"
	hdrFilter   = "pushd-filter"
	hdrBusiness = "pushd-business"
	hdrPriority = "pushd-priority"
	hdrCreated  = "pushd-created"
	hdrTTL      = "pushd-ttl"
	hdrPrefix   = "pushd-"
)

const (
	// recordVersion is the record format this package writes and reads.
	recordVersion = "1"
	// keyShards is how many shards a device push is split into, at most
	// one record each: per-device order needs a device's records on one
	// partition, and few records per push keep imports batched.
	keyShards = 16
	// maxRecordTargets bounds the targets of one record (the push API's
	// own ceiling for a request).
	maxRecordTargets = 10_000
	// maxRecordRegions bounds the regions one record names.
	maxRecordRegions = 64
	// maxValue bounds a record's value: the largest payload and the
	// frame's other fields.
	maxValue = appliance.CeilingMaxPayload + 4<<10
)

// ErrRecord marks a record whose headers or value this version cannot
// read: it is skipped, counted as invalid, and never retried.
var ErrRecord = errors.New("bad bridge record")

// Route is a record's headers, decoded.
type Route struct {
	ID      string
	Origin  string
	Regions []string
	Kind    appliance.TargetKind
	App     string
	Targets []string
	// Filter is a group or broadcast push's filter, checked
	// (appliance.ParseFilter admits it); nil for none.
	Filter   *api.Filter
	Business string
	Priority wire.Priority
	Created  time.Time // to the millisecond
	TTL      time.Duration
}

// For reports whether the record is for region.
func (r *Route) For(region string) bool { return slices.Contains(r.Regions, region) }

// Expires is when the message's TTL ends.
func (r *Route) Expires() time.Time { return r.Created.Add(r.TTL) }

// appendHeaders appends r's headers.
func appendHeaders(dst []kgo.RecordHeader, r *Route) []kgo.RecordHeader {
	h := func(k, v string) { dst = append(dst, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	h(hdrVersion, recordVersion)
	h(hdrID, r.ID)
	h(hdrOrigin, r.Origin)
	h(hdrRegions, strings.Join(r.Regions, ","))
	h(hdrKind, r.Kind.String())
	h(hdrApp, r.App)
	if len(r.Targets) > 0 {
		h(hdrTargets, strings.Join(r.Targets, ","))
	}
	if r.Filter != nil {
		// A checked api.Filter always marshals.
		f, _ := json.Marshal(r.Filter)
		h(hdrFilter, string(f))
	}
	if r.Business != "" {
		h(hdrBusiness, r.Business)
	}
	h(hdrPriority, r.Priority.String())
	h(hdrCreated, strconv.FormatInt(r.Created.UnixMilli(), 10))
	h(hdrTTL, strconv.FormatInt(r.TTL.Milliseconds(), 10))
	return dst
}

func recordErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRecord, fmt.Sprintf(format, args...))
}

// DecodeRoute reads a record's headers. It never looks at the value.
func DecodeRoute(hs []kgo.RecordHeader) (Route, error) {
	var r Route
	seen := map[string]bool{}
	for _, h := range hs {
		if !strings.HasPrefix(h.Key, hdrPrefix) {
			continue
		}
		if seen[h.Key] {
			return r, recordErr("header %s given twice", h.Key)
		}
		seen[h.Key] = true
		v := string(h.Value)
		var err error
		switch h.Key {
		case hdrVersion:
			if v != recordVersion {
				err = fmt.Errorf("version %q, this node reads %s", v, recordVersion)
			}
		case hdrID:
			r.ID, err = id(v)
		case hdrOrigin:
			r.Origin, err = region(v)
		case hdrRegions:
			r.Regions, err = list(v, maxRecordRegions, region)
		case hdrKind:
			var ok bool
			if r.Kind, ok = appliance.ParseTargetKind(v); !ok {
				err = fmt.Errorf("unknown kind %q", v)
			}
		case hdrApp:
			r.App, err = id(v)
		case hdrTargets:
			r.Targets, err = list(v, maxRecordTargets, id)
		case hdrFilter:
			r.Filter, err = filter(h.Value)
		case hdrBusiness:
			r.Business, err = id(v)
		case hdrPriority:
			if v == "" { // ParsePriority would read it as normal
				err = errors.New("empty")
				break
			}
			r.Priority, err = wire.ParsePriority(v)
		case hdrCreated:
			var ms int64
			if ms, err = positive(v); err == nil {
				r.Created = time.UnixMilli(ms)
			}
		case hdrTTL:
			var ms int64
			if ms, err = positive(v); err == nil {
				r.TTL = time.Duration(ms) * time.Millisecond
			}
		default:
			err = errors.New("unknown routing header")
		}
		if err != nil {
			return r, recordErr("%s: %v", h.Key, err)
		}
	}
	for _, k := range []string{hdrVersion, hdrID, hdrOrigin, hdrRegions, hdrKind, hdrApp, hdrPriority, hdrCreated, hdrTTL} {
		if !seen[k] {
			return r, recordErr("no %s header", k)
		}
	}
	switch {
	case r.Kind == appliance.TargetBroadcast && len(r.Targets) > 0:
		return r, recordErr("a broadcast names no targets")
	case r.Kind == appliance.TargetGroup && len(r.Targets) != 1:
		return r, recordErr("a group record names one group, not %d", len(r.Targets))
	case r.Kind == appliance.TargetDevices && len(r.Targets) == 0:
		return r, recordErr("a device record names no device")
	case r.Kind == appliance.TargetUsers && len(r.Targets) == 0:
		return r, recordErr("a user record names no user")
	case r.Filter != nil && r.Kind != appliance.TargetGroup && r.Kind != appliance.TargetBroadcast:
		return r, recordErr("a %s record has no filter", r.Kind)
	case r.For(r.Origin):
		// Its origin consumes it too on a shared topic: the loop guard.
		return r, recordErr("region %s is the record's origin and one of its regions", r.Origin)
	}
	return r, nil
}

func id(v string) (string, error) {
	if !token.ValidID(v) {
		return "", errors.New("want 1-128 letters, digits or ._:-")
	}
	return v, nil
}

func region(v string) (string, error) {
	if !appliance.ValidRegion(v) {
		return "", fmt.Errorf("region %q: want 1-128 letters, digits or ._:-, not \"all\"", v)
	}
	return v, nil
}

// list splits a comma-separated header into at most max distinct items,
// each checked by check.
func list(v string, max int, check func(string) (string, error)) ([]string, error) {
	if v == "" {
		return nil, errors.New("empty list")
	}
	if n := strings.Count(v, ",") + 1; n > max {
		return nil, fmt.Errorf("%d items, at most %d", n, max)
	}
	items := strings.Split(v, ",")
	seen := make(map[string]struct{}, len(items))
	for _, it := range items {
		if _, err := check(it); err != nil {
			return nil, err
		}
		if _, dup := seen[it]; dup {
			return nil, fmt.Errorf("%q listed twice", it)
		}
		seen[it] = struct{}{}
	}
	return items, nil
}

// filter reads a filter header: the push API's JSON, strictly, that
// appliance.ParseFilter admits and that narrows something. Its lists are
// nil when empty, as they encode.
func filter(v []byte) (*api.Filter, error) {
	var f api.Filter
	if err := api.DecodeStrict(v, &f); err != nil {
		return nil, err
	}
	for _, l := range []*[]string{&f.Platforms, &f.Businesses, &f.Tags} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	if len(f.Versions) == 0 {
		f.Versions = nil
	}
	parsed, err := appliance.ParseFilter(&f)
	switch {
	case err != nil:
		return nil, err
	case parsed == nil:
		return nil, errors.New("an empty filter: leave the header out")
	}
	return &f, nil
}

func positive(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || strconv.FormatInt(n, 10) != v {
		return 0, fmt.Errorf("%q is not a positive decimal number", v)
	}
	return n, nil
}

// groupOf is the group name a record's value carries.
func groupOf(r *Route) string {
	if r.Kind == appliance.TargetGroup {
		return r.Targets[0]
	}
	return ""
}

// encodeValue encodes the message as a PUSH frame.
func encodeValue(r *Route, payload []byte) []byte {
	p := wire.Push{ID: r.ID, Business: r.Business, Priority: r.Priority,
		Created: uint64(r.Created.UnixMilli()), Group: groupOf(r), Payload: payload}
	return wire.AppendPush(make([]byte, 0, wire.PushLen(&p)), &p)
}

// decodeValue decodes a record's value against its route and returns the
// payload.
func decodeValue(r *Route, v []byte) ([]byte, error) {
	f, n, err := wire.Decode(v, maxValue)
	if err != nil {
		return nil, recordErr("value: %v", err)
	}
	p, ok := f.(*wire.Push)
	switch {
	case !ok:
		return nil, recordErr("value is a %s frame, not PUSH", f.Type())
	case n != len(v):
		return nil, recordErr("value has %d bytes after its frame", len(v)-n)
	case p.Seq != 0 || p.Redelivery || p.Gap:
		return nil, recordErr("value carries a seq or flags")
	case p.ID != r.ID || p.Business != r.Business || p.Priority != r.Priority ||
		p.Created != uint64(r.Created.UnixMilli()) || p.Group != groupOf(r):
		return nil, recordErr("value (id %q, business %q, priority %s, created %d, group %q) does not match its headers",
			p.ID, p.Business, p.Priority, p.Created, p.Group)
	}
	return p.Payload, nil
}

// shardOf is the shard of one of app's devices or users.
func shardOf(app, target string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(app))
	_, _ = h.Write([]byte{'/'})
	_, _ = h.Write([]byte(target))
	return h.Sum32() % keyShards
}
