package streams

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Priority orders messages for the degrade policy.
type Priority uint8

// Priorities. Callers treat 0 as PriorityNormal.
const (
	PriorityLow    Priority = 1
	PriorityNormal Priority = 2
	PriorityHigh   Priority = 3
)

// Message is what Append stores in each target device's inbox.
type Message struct {
	ID       string // global message id, assigned by the caller; the dedupe key
	Business string
	Priority Priority
	Created  time.Time     // zero means now
	TTL      time.Duration // 0 means InboxTTL; capped at InboxTTL
	Payload  []byte

	// MaxLen caps each target device's unacked entries for this append, in
	// place of Config.InboxMaxLen, so a cap changed at run time applies from
	// the next append on. The cap is exact: after the append an inbox holds
	// at most MaxLen unacked entries, the oldest trimmed, and a Resume from
	// before them reports Recovered=false. A lowered cap trims at the next
	// append, not before; a raised one brings nothing back. It does not
	// change DedupeWindow or the InboxMaxLen that Resume and ReadMany read
	// by default. 0 means Config.InboxMaxLen; negative is
	// ErrInvalidArgument. There is no ceiling beyond int64.
	MaxLen int64
}

// Entry is one inbox entry as read back.
type Entry struct {
	Seq      uint64
	ID       string
	Business string
	Priority Priority
	Created  time.Time
	Expires  time.Time
	Payload  []byte
}

// Appended reports what Append did for one device.
type Appended struct {
	Device    string
	Seq       uint64 // the entry's seq (the existing one when Duplicate)
	Epoch     string // the inbox epoch
	Duplicate bool   // the message id was in the device's dedupe window: nothing new stored
	Route     Route  // the device's current route, read by the same script
}

// Append stores msg in every device's inbox with one pipeline of script
// calls: one call per device on a cluster, up to Config.ScriptBatch devices
// per call on a standalone Redis. For each device the script assigns the
// next contiguous seq, deduplicates by msg.ID (a repeated id returns the
// original seq with Duplicate set, so a retry after a timeout is safe), trims
// the oldest unacked entries past msg.MaxLen or else InboxMaxLen (raising
// the device's lost seq, which makes a Resume from before them report
// Recovered=false),
// renews the keys' TTL when due and reads the device's route. Results are in
// the order of devices; a device listed twice gets Duplicate the second time.
//
// With Config.WaitReplicas set, Append returns only once that many
// replicas of every primary it wrote to have its writes, and fails with
// ErrNotReplicated (an ErrUnavailable) when they do not confirm within
// WaitTimeout: the writes are on the primary, but a failover could lose
// them.
//
// A message whose Created+TTL has already passed is refused with ErrExpired.
// On any other error nothing is known about which devices were stored;
// retry the call.
func (s *Store) Append(ctx context.Context, msg Message, devices []string) ([]Appended, error) {
	res, err := s.AppendMany(ctx, []AppendRequest{{Msg: msg, Devices: devices}})
	if err != nil {
		return nil, err
	}
	return res[0].Appended, res[0].Err
}

// AppendRequest is one message and its target devices, for AppendMany.
type AppendRequest struct {
	Msg     Message
	Devices []string
}

// AppendResult is what AppendMany did for one request: the devices'
// results, as Append returns them, or Err when the request was refused
// before anything was sent (ErrInvalidArgument, ErrExpired).
type AppendResult struct {
	Appended []Appended
	Err      error
}

// AppendMany is Append for several messages in one pipeline: one round
// trip, and under appendfsync always one fsync, for all of them. The
// calls run in the order of reqs, so a device's messages are stored in
// that order. A request refused on its own (its Err set) stores nothing
// and does not stop the others. Config.WaitReplicas applies as to Append,
// to the pipeline as a whole. The error is for the pipeline: after one,
// nothing is known about which requests were stored; retry the call (each
// message's dedupe makes that safe).
func (s *Store) AppendMany(ctx context.Context, reqs []AppendRequest) ([]AppendResult, error) {
	out := make([]AppendResult, len(reqs))
	// sent is a request's calls: calls[start:start+n].
	type sent struct{ req, start, n int }
	var batches []sent
	var calls []scriptCall
	for i, r := range reqs {
		c, err := s.appendCalls(r.Msg, r.Devices)
		if err != nil {
			out[i].Err = err
			continue
		}
		if len(c) > 0 {
			batches = append(batches, sent{req: i, start: len(calls), n: len(c)})
			calls = append(calls, c...)
		}
	}
	if len(calls) == 0 {
		return out, nil
	}
	if err := s.runReplicated(ctx, calls); err != nil {
		first := reqs[batches[0].req]
		what, to := first.Msg.ID, fmt.Sprintf("%d devices", len(first.Devices))
		if len(batches) > 1 {
			what, to = fmt.Sprintf("%d messages", len(batches)), "their devices"
		}
		return nil, wrap("append "+what+" to", to, err)
	}
	for _, b := range batches {
		appended, err := s.appended(reqs[b.req].Devices, calls[b.start:b.start+b.n])
		if err != nil {
			return nil, err
		}
		out[b.req].Appended = appended
	}
	return out, nil
}

// appendCalls builds the script calls storing msg for devices, or says
// why msg is refused.
func (s *Store) appendCalls(msg Message, devices []string) ([]scriptCall, error) {
	if !validID(msg.ID) {
		return nil, fmt.Errorf("append: message id %q: %w", msg.ID, ErrInvalidArgument)
	}
	if msg.TTL < 0 {
		return nil, fmt.Errorf("append %s: ttl %v: %w", msg.ID, msg.TTL, ErrInvalidArgument)
	}
	if msg.MaxLen < 0 {
		return nil, fmt.Errorf("append %s: max len %d: %w", msg.ID, msg.MaxLen, ErrInvalidArgument)
	}
	if err := checkIDs("append: device", devices); err != nil {
		return nil, err
	}
	if len(devices) == 0 {
		return nil, nil
	}

	now := time.Now()
	created := msg.Created
	if created.IsZero() {
		created = now
	}
	ttl := msg.TTL
	if ttl == 0 || ttl > s.cfg.InboxTTL {
		ttl = s.cfg.InboxTTL
	}
	expires := created.Add(ttl)
	if limit := now.Add(s.cfg.InboxTTL); expires.After(limit) {
		// A message never outlives its inbox key; a Created in the future
		// must not stretch that.
		expires = limit
	}
	if !expires.After(now) {
		// Stored, it would only burn a seq and read as a gap.
		return nil, fmt.Errorf("append %s: created %v with ttl %v: %w", msg.ID, created, ttl, ErrExpired)
	}

	maxLen := msg.MaxLen
	if maxLen == 0 {
		maxLen = s.cfg.InboxMaxLen
	}
	// One argument list shared by every call.
	args := []any{
		msg.ID,
		msg.Business,
		int64(msg.Priority),
		created.UnixMilli(),
		expires.UnixMilli(),
		msg.Payload,
		newToken(),
		maxLen,
		s.cfg.DedupeWindow,
		s.cfg.InboxTTL.Milliseconds(),
		now.UnixMilli(),
	}
	per := s.batch
	calls := make([]scriptCall, 0, (len(devices)+per-1)/per)
	for i := 0; i < len(devices); i += per {
		group := devices[i:min(i+per, len(devices))]
		keys := make([]string, 0, 4*len(group))
		for _, d := range group {
			keys = append(keys, metaKey(d), inboxKey(d), dedupeKey(d), routeKey(d))
		}
		calls = append(calls, scriptCall{script: appendScript, keys: keys, args: args})
	}
	return calls, nil
}

// appended reads the replies of one message's calls.
func (s *Store) appended(devices []string, calls []scriptCall) ([]Appended, error) {
	per := s.batch
	out := make([]Appended, 0, len(devices))
	for i, c := range calls {
		v, err := c.cmd.Slice()
		group := devices[i*per : min((i+1)*per, len(devices))]
		if err == nil && len(v) != 5*len(group) {
			err = fmt.Errorf("reply has %d elements, want %d", len(v), 5*len(group))
		}
		if err != nil {
			return nil, fmt.Errorf("append %s: %w", inboxKey(group[0]), err)
		}
		for j, d := range group {
			r := v[5*j : 5*j+5]
			out = append(out, Appended{
				Device:    d,
				Epoch:     str(r[0]),
				Seq:       uint64(num(r[1])),
				Duplicate: num(r[2]) == 1,
				Route:     Route{Node: str(r[3]), Epoch: unum(r[4])},
			})
		}
	}
	return out, nil
}

// Position is a client's resume cursor: the last seq it processed in an
// inbox epoch. The zero Position is a fresh client.
type Position struct {
	Epoch string
	Seq   uint64
}

// Resumed answers Resume.
type Resumed struct {
	Epoch     string  // current epoch (created if the device had none)
	Recovered bool    // continuity from the position is proven
	Acked     uint64  // server-side ack cursor
	Last      uint64  // last assigned seq
	Entries   []Entry // unacked entries after max(pos.Seq, Acked), in order, expired ones skipped
	// Lost says why Recovered is false (the first cause found): one of
	// the Lost* values; "" when Recovered is true.
	Lost string
}

// Why a Resume could not prove continuity (Resumed.Lost).
const (
	// LostInbox: the position names an epoch, but the device has no inbox
	// (it expired, was flushed or lost); a new one was created.
	LostInbox = "inbox_missing"
	// LostEpoch: the position is from another epoch of the inbox.
	LostEpoch = "other_epoch"
	// LostAhead: the position's seq is beyond the last seq the inbox
	// assigned; the epoch was replaced.
	LostAhead = "cursor_ahead"
	// LostEntries: entries after the position were trimmed by the cap,
	// expired, or are missing.
	LostEntries = "entries_lost"
)

// Resume is called when a device connects. It returns the device's first
// limit unacked entries after its position (limit <= 0 means InboxMaxLen)
// and whether continuity from the position is proven:
//
//   - pos.Epoch == "" is a fresh client (cursor 0, pos.Seq ignored).
//   - No inbox for the device: one is created with a new epoch, and
//     Recovered is true only for a fresh client.
//   - pos.Epoch is another epoch: Recovered is false and the entries start
//     after the server's ack cursor.
//   - pos.Seq beyond the last assigned seq: Redis lost writes and the seq
//     counter went back (or the client kept a cursor it never received).
//     The epoch is replaced (those seqs will name other messages),
//     Recovered is false, entries start after the ack cursor.
//   - The lost seq is beyond pos.Seq (the cap trimmed entries after it, or
//     a gap was found before): Recovered is false.
//   - Among the entries read, an expired one, or a seq that is neither
//     acked nor present (whatever removed it), is a gap: Recovered is false
//     and the lost seq is raised past it, so later resumes say so too.
//   - Otherwise Recovered is true.
//
// When Recovered is false, Lost names the first of these causes found.
//
// Entries beyond the first limit are not inspected here; the caller sees a
// later gap as a jump in seqs when it reads them with ReadMany.
//
// With Config.WaitReplicas set, Resume returns entries only once the
// replicas have everything it read (ErrNotReplicated otherwise).
//
// Resume refreshes the TTL of the device's inbox keys. A device that also
// claims its route on connect should use Open, which sends the claim and
// the resume in one round trip.
func (s *Store) Resume(ctx context.Context, device string, pos Position, limit int) (Resumed, error) {
	if !validID(device) {
		return Resumed{}, fmt.Errorf("resume: device id %q: %w", device, ErrInvalidArgument)
	}
	calls := []scriptCall{s.resumeCall(device, pos, limit, false, "")}
	if err := s.runReplicated(ctx, calls); err != nil {
		return Resumed{}, wrap("resume", inboxKey(device), err)
	}
	r, _, _, err := parseResume(calls[0].cmd)
	if err != nil {
		return Resumed{}, fmt.Errorf("resume %s: %w", inboxKey(device), err)
	}
	return r, nil
}

// resumeCall is the resume.lua call for device from pos; limit <= 0 means
// InboxMaxLen. With session set it also records user as the device's
// user and reads the device's groups (Open); Resume leaves both alone.
func (s *Store) resumeCall(device string, pos Position, limit int, session bool, user string) scriptCall {
	if limit <= 0 {
		limit = int(s.cfg.InboxMaxLen)
	}
	keys := []string{metaKey(device), inboxKey(device), dedupeKey(device)}
	userArg := ""
	if session {
		keys = append(keys, deviceGroupsKey(device))
		userArg = "=" + user
	}
	return scriptCall{
		script: resumeScript,
		keys:   keys,
		args: []any{
			pos.Epoch,
			pos.Seq,
			limit,
			time.Now().UnixMilli(),
			newToken(),
			s.cfg.InboxTTL.Milliseconds(),
			userArg,
		},
	}
}

// parseResume decodes resume.lua's {epoch, recovered, acked, last,
// entries, lost, previous user, groups}.
func parseResume(cmd *redis.Cmd) (r Resumed, prevUser string, groups []string, err error) {
	v, err := cmd.Slice()
	if err == nil && len(v) != 8 {
		err = fmt.Errorf("reply has %d elements, want 8", len(v))
	}
	var entries []Entry
	if err == nil {
		entries, err = parseEntries(v[4])
	}
	if err == nil {
		groups, err = strs(v[7])
	}
	if err != nil {
		return Resumed{}, "", nil, err
	}
	return Resumed{
		Epoch:     str(v[0]),
		Recovered: num(v[1]) == 1,
		Acked:     uint64(num(v[2])),
		Last:      uint64(num(v[3])),
		Entries:   entries,
		Lost:      str(v[5]),
	}, str(v[6]), groups, nil
}

// strs decodes a reply that is a list of strings; an empty list is nil.
func strs(v any) ([]string, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("unexpected reply %T, want a list", v)
	}
	if len(list) == 0 {
		return nil, nil
	}
	out := make([]string, len(list))
	for i, x := range list {
		out[i] = str(x)
	}
	return out, nil
}

// ReadRequest asks ReadMany for one device's entries after a seq.
type ReadRequest struct {
	Device string
	Epoch  string // the epoch After belongs to
	After  uint64
	Limit  int // <= 0 means InboxMaxLen
}

// ReadResult answers one ReadRequest.
type ReadResult struct {
	Epoch   string  // current epoch; "" when the device has no inbox
	Entries []Entry // in seq order, expired entries skipped
	// EpochChanged means After no longer names a position in this inbox:
	// the epoch is not the requested one, or Last < After (Redis lost writes
	// and the seq counter went back). Entries then start after the server's
	// ack cursor and the caller must treat the stream as not recovered (send
	// the device through Resume).
	EpochChanged bool
	Last         uint64 // last assigned seq
}

// ReadMany reads entries with seq > After for many devices in one pipeline,
// to refill in-flight windows and fill gaps. It changes nothing. An expired
// entry is skipped, so Entries may jump over a seq: that is a gap. With
// Config.WaitReplicas set, it returns only once the replicas have what it
// read (ErrNotReplicated otherwise), as Resume.
func (s *Store) ReadMany(ctx context.Context, reqs []ReadRequest) ([]ReadResult, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	now := time.Now().UnixMilli()
	calls := make([]scriptCall, len(reqs))
	for i, r := range reqs {
		if !validID(r.Device) {
			return nil, fmt.Errorf("read: device id %q: %w", r.Device, ErrInvalidArgument)
		}
		limit := r.Limit
		if limit <= 0 {
			limit = int(s.cfg.InboxMaxLen)
		}
		calls[i] = scriptCall{
			script: readScript,
			keys:   []string{metaKey(r.Device), inboxKey(r.Device)},
			args:   []any{r.Epoch, r.After, limit, now},
		}
	}
	if err := s.runReplicated(ctx, calls); err != nil {
		return nil, wrap("read", fmt.Sprintf("%d inboxes", len(reqs)), err)
	}
	out := make([]ReadResult, len(reqs))
	for i, c := range calls {
		v, err := c.cmd.Slice()
		if err == nil && len(v) != 4 {
			err = fmt.Errorf("reply has %d elements, want 4", len(v))
		}
		var entries []Entry
		if err == nil {
			entries, err = parseEntries(v[3])
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", inboxKey(reqs[i].Device), err)
		}
		out[i] = ReadResult{
			Epoch:        str(v[0]),
			EpochChanged: num(v[1]) == 1,
			Last:         uint64(num(v[2])),
			Entries:      entries,
		}
	}
	return out, nil
}

// AckRequest is one device's cumulative ack: every seq up to Seq in Epoch
// was processed.
type AckRequest struct {
	Device string
	Epoch  string
	Seq    uint64
}

// AckMany applies cumulative acks in one pipeline of script calls (batched
// like Append's). An ack applies when its
// epoch is the inbox's and acked < Seq <= last: the ack cursor moves to Seq
// and the inbox is trimmed up to it (XTRIM MINID), so an inbox holds only
// unacked entries. A stale, too large or other-epoch ack changes nothing.
// The result says, per request, whether it applied. Acks are idempotent, so
// a failed call is safe to retry.
func (s *Store) AckMany(ctx context.Context, reqs []AckRequest) ([]bool, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	for _, r := range reqs {
		if !validID(r.Device) {
			return nil, fmt.Errorf("ack: device id %q: %w", r.Device, ErrInvalidArgument)
		}
	}
	per := s.batch
	calls := make([]scriptCall, 0, (len(reqs)+per-1)/per)
	for i := 0; i < len(reqs); i += per {
		group := reqs[i:min(i+per, len(reqs))]
		keys := make([]string, 0, 2*len(group))
		args := make([]any, 0, 2*len(group))
		for _, r := range group {
			keys = append(keys, metaKey(r.Device), inboxKey(r.Device))
			args = append(args, r.Epoch, r.Seq)
		}
		calls = append(calls, scriptCall{script: ackScript, keys: keys, args: args})
	}
	if err := s.runScripts(ctx, calls); err != nil {
		return nil, wrap("ack", fmt.Sprintf("%d inboxes", len(reqs)), err)
	}
	out := make([]bool, 0, len(reqs))
	for i, c := range calls {
		v, err := c.cmd.Slice()
		group := reqs[i*per : min((i+1)*per, len(reqs))]
		if err == nil && len(v) != len(group) {
			err = fmt.Errorf("reply has %d elements, want %d", len(v), len(group))
		}
		if err != nil {
			return nil, fmt.Errorf("ack %s: %w", inboxKey(group[0].Device), err)
		}
		for _, x := range v {
			out = append(out, num(x) == 1)
		}
	}
	return out, nil
}

// DeviceInfo is a device's inbox and route state, for operators.
type DeviceInfo struct {
	Epoch    string // "" when the device has no inbox
	Last     uint64 // last assigned seq
	Acked    uint64 // ack cursor
	Lost     uint64 // highest seq known lost (trimmed, expired or missing)
	InboxLen int64  // entries in the inbox stream
	Route    Route
	RouteTTL time.Duration // time left on the route key; 0 when there is none
}

// Device reads a device's inbox meta, inbox length and route in one
// pipeline.
func (s *Store) Device(ctx context.Context, device string) (DeviceInfo, error) {
	if !validID(device) {
		return DeviceInfo{}, fmt.Errorf("device: device id %q: %w", device, ErrInvalidArgument)
	}
	pipe := s.rdb.Pipeline()
	meta := pipe.HMGet(ctx, metaKey(device), "e", "l", "a", "x")
	xlen := pipe.XLen(ctx, inboxKey(device))
	route := pipe.HMGet(ctx, routeKey(device), "n", "e")
	pttl := pipe.PTTL(ctx, routeKey(device))
	if _, err := pipe.Exec(ctx); err != nil {
		return DeviceInfo{}, wrap("device", device, err)
	}
	m, r := meta.Val(), route.Val()
	info := DeviceInfo{
		Epoch:    str(m[0]),
		Last:     unum(m[1]),
		Acked:    unum(m[2]),
		Lost:     unum(m[3]),
		InboxLen: xlen.Val(),
		Route:    Route{Node: str(r[0]), Epoch: unum(r[1])},
	}
	if d := pttl.Val(); d > 0 {
		info.RouteTTL = d
	}
	return info, nil
}

// parseEntries decodes the {{"0-<seq>", {field, value, ...}}, ...} rows the
// inbox scripts return. Fields are written by append.lua in a fixed order,
// but are matched by name so that order is not load-bearing here.
func parseEntries(v any) ([]Entry, error) {
	rows, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("entries: unexpected reply %T", v)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	out := make([]Entry, len(rows))
	for i, row := range rows {
		r, ok := row.([]any)
		if !ok || len(r) != 2 {
			return nil, fmt.Errorf("entry %d: unexpected reply %v", i, row)
		}
		id := str(r[0])
		seq, err := strconv.ParseUint(strings.TrimPrefix(id, "0-"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("entry id %q: %w", id, err)
		}
		fields, ok := r[1].([]any)
		if !ok || len(fields)%2 != 0 {
			return nil, fmt.Errorf("entry %s: unexpected fields %v", id, r[1])
		}
		e := Entry{Seq: seq}
		for j := 0; j < len(fields); j += 2 {
			val := str(fields[j+1])
			switch str(fields[j]) {
			case "i":
				e.ID = val
			case "b":
				e.Business = val
			case "p":
				p, _ := strconv.ParseUint(val, 10, 8)
				e.Priority = Priority(p)
			case "c":
				e.Created = parseMillis(val)
			case "x":
				e.Expires = parseMillis(val)
			case "d":
				e.Payload = []byte(val)
			}
		}
		out[i] = e
	}
	return out, nil
}

func parseMillis(s string) time.Time {
	ms, _ := strconv.ParseInt(s, 10, 64)
	return time.UnixMilli(ms)
}

// str returns a reply element as a string; nil (a missing field) is "".
func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return ""
}

// num returns a reply element as an int64; nil or garbage is 0.
func num(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

// unum returns a reply element as a uint64; nil or garbage is 0.
func unum(v any) uint64 {
	switch x := v.(type) {
	case int64:
		if x > 0 {
			return uint64(x)
		}
	case string:
		n, _ := strconv.ParseUint(x, 10, 64)
		return n
	}
	return 0
}
