package appliance

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pushd/pushd/appliance/api"
)

// Message tracing. Every node records what it does with each message it
// handles, hop by hop: accepted by the push API, stored in an inbox,
// passed to another node's delivery stream, handed to a session, written
// to the socket, retransmitted, acked, fanned out to a group's sessions.
// pushctl trace asks every node for one message's events (admin API,
// GET /v1/admin/trace/{id}) and prints the journey in time order.
//
// The events stay in the node's memory, never in Redis: recording one is
// a lock, a few dozen bytes copied and no allocation, cheap enough to
// stay on at full load. A node keeps them for TraceTTL, in at most
// TraceMemory bytes (the oldest go first), and loses them when it
// restarts. docs/operations.md says how long that covers at a given rate.

// traceKind is one kind of hop.
type traceKind uint8

const (
	traceAccepted      traceKind = iota + 1 // the push API took it: key = app + "/", a = API key id, b = group, n = devices
	traceStored                             // appended to an inbox: a = route node ("" offline), n = 1 for a duplicate
	traceNotStored                          // Redis unreachable, not stored: n = 1 if a local session took it
	traceRouted                             // a delivery entry written to node a's stream: n = targets (0: a group entry), b = error
	traceHanded                             // queued to a session: a = session id, b = via (live, replay, fetch, takeover)
	traceMissed                             // a live delivery found no session to take it: b = why
	traceWritten                            // the session's output holding it went to the socket: a = session
	traceRetransmitted                      // resent after its ack timeout: a = session, n = attempt
	traceAcked                              // the device acked it: a = session
	traceShed                               // dropped for the degrade policy: a = session
	traceFanout                             // a group frame handed to n local sessions: key = group key
	traceKindCount
)

var traceKindNames = [traceKindCount]string{"", "accepted", "stored", "not_stored", "routed", "handed", "missed",
	"written", "retransmitted", "acked", "shed", "fanout"}

// How a message reached a session (traceHanded's via).
const (
	viaLive     = "live"     // a push just stored, or its delivery entry
	viaReplay   = "replay"   // the inbox read when the session opened
	viaFetch    = "fetch"    // an inbox read after the window had room again
	viaTakeover = "takeover" // an entry taken over from a node presumed dead
)

const (
	traceShards = 16
	// traceChunk is the unit of trace memory: a shard writes records
	// into its current chunk and, when it is full, reuses its oldest.
	traceChunk = 64 << 10
	// traceMaxString bounds each string of a record (ids, errors).
	traceMaxString = 300
)

// tracer is a node's trace memory: byte chunks of compact records,
// sharded by message id, so that every event of one message is in one
// shard and a lookup scans a sixteenth of the memory. A nil tracer
// records nothing (tracing off).
//
// A record is: length u16, kind u8, unix nanos i64, then id, key, seq,
// a, b, n, strings as uvarint length and bytes, numbers as uvarints.
// Lock order: a shard's mu is a leaf, taken under session.mu.
type tracer struct {
	node   string
	ttl    time.Duration
	start  time.Time // wall clock at the start; events are timed from it
	seed   maphash.Seed
	shards [traceShards]traceShard
	// log, when set (debug logging), gets every event too.
	log *slog.Logger
}

type traceShard struct {
	mu     sync.Mutex
	chunks [][]byte // allocated as needed, up to max
	cur    int      // the chunk written to
	max    int
}

// newTracer returns a tracer keeping memory bytes of events for ttl, or
// nil when memory is negative.
func newTracer(node string, memory int, ttl time.Duration, log *slog.Logger) *tracer {
	if memory < 0 {
		return nil
	}
	t := &tracer{node: node, ttl: ttl, start: time.Now(), seed: maphash.MakeSeed()}
	if log.Enabled(context.Background(), slog.LevelDebug) {
		t.log = log
	}
	per := max(2, memory/traceShards/traceChunk)
	for i := range t.shards {
		t.shards[i].max = per
	}
	return t
}

// add records one event, now.
func (t *tracer) add(k traceKind, id, key string, seq uint64, a, b string, n uint64) {
	// The monotonic clock since the tracer's start costs half of a
	// time.Now (which also reads the wall clock), on every hop.
	t.addAt(t.start.Add(time.Since(t.start)), k, id, key, seq, a, b, n)
}

// addAt records one event that happened at now.
func (t *tracer) addAt(now time.Time, k traceKind, id, key string, seq uint64, a, b string, n uint64) {
	var scratch [512]byte
	rec := append(scratch[:0], 0, 0, byte(k))
	rec = binary.LittleEndian.AppendUint64(rec, uint64(now.UnixNano()))
	rec = appendTraceString(rec, id)
	rec = appendTraceString(rec, key)
	rec = binary.AppendUvarint(rec, seq)
	rec = appendTraceString(rec, a)
	rec = appendTraceString(rec, b)
	rec = binary.AppendUvarint(rec, n)
	binary.LittleEndian.PutUint16(rec, uint16(len(rec)))
	sh := &t.shards[maphash.String(t.seed, id)%traceShards]
	sh.mu.Lock()
	sh.write(rec)
	sh.mu.Unlock()
	if t.log != nil {
		attrs := []any{"msg_id", id, "device", key, "seq", seq}
		for i, v := range []any{a, b, n} {
			if name := traceFields[k][i]; name != "" {
				attrs = append(attrs, name, v)
			}
		}
		t.log.Debug("message "+traceKindNames[k], attrs...)
	}
}

// traceFields names a record's a, b and n in the debug log.
var traceFields = [traceKindCount][3]string{
	traceAccepted:      {"api_key", "group", "devices"},
	traceStored:        {"route", "", "duplicate"},
	traceNotStored:     {"", "", "delivered"},
	traceRouted:        {"to", "error", "targets"},
	traceHanded:        {"session", "via", ""},
	traceMissed:        {"", "reason", ""},
	traceWritten:       {"session", "", ""},
	traceRetransmitted: {"session", "", "attempt"},
	traceAcked:         {"session", "", ""},
	traceShed:          {"session", "", ""},
	traceFanout:        {"", "", "sessions"},
}

func appendTraceString(dst []byte, s string) []byte {
	if len(s) > traceMaxString {
		s = s[:traceMaxString]
	}
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// write copies rec into the current chunk, moving to the next (the
// oldest, once all are allocated) when it does not fit. Lock must be held.
func (sh *traceShard) write(rec []byte) {
	if len(sh.chunks) == 0 {
		sh.chunks = append(sh.chunks, make([]byte, 0, traceChunk))
	}
	c := sh.chunks[sh.cur]
	if len(c)+len(rec) > cap(c) {
		sh.cur++
		if sh.cur == sh.max {
			sh.cur = 0
		}
		if sh.cur == len(sh.chunks) {
			sh.chunks = append(sh.chunks, make([]byte, 0, traceChunk))
		}
		c = sh.chunks[sh.cur][:0]
	}
	sh.chunks[sh.cur] = append(c, rec...)
}

// traceRecord is a decoded record.
type traceRecord struct {
	kind traceKind
	at   time.Time
	id   string
	key  string
	seq  uint64
	a, b string
	n    uint64
}

// lookup returns the events of message id younger than the TTL, oldest
// first.
func (t *tracer) lookup(id string) []traceRecord {
	if t == nil {
		return nil
	}
	since := time.Now().Add(-t.ttl).UnixNano()
	sh := &t.shards[maphash.String(t.seed, id)%traceShards]
	var out []traceRecord
	sh.mu.Lock()
	for i := range sh.chunks {
		// Oldest chunk first: the one after the current.
		c := sh.chunks[(sh.cur+1+i)%len(sh.chunks)]
		for len(c) >= 3 {
			size := int(binary.LittleEndian.Uint16(c))
			if size < 11 || size > len(c) {
				break
			}
			if r, ok := decodeTraceRecord(c[:size], id, since); ok {
				out = append(out, r)
			}
			c = c[size:]
		}
	}
	sh.mu.Unlock()
	slices.SortStableFunc(out, func(x, y traceRecord) int { return x.at.Compare(y.at) })
	return out
}

// decodeTraceRecord decodes rec if it is an event of id at or after
// since (unix nanos).
func decodeTraceRecord(rec []byte, id string, since int64) (traceRecord, bool) {
	r := traceRecord{kind: traceKind(rec[2])}
	at := int64(binary.LittleEndian.Uint64(rec[3:]))
	if at < since {
		return r, false
	}
	p := rec[11:]
	str := func() string {
		l, k := binary.Uvarint(p)
		if k <= 0 || uint64(len(p)-k) < l {
			p = nil
			return ""
		}
		s := string(p[k : k+int(l)])
		p = p[k+int(l):]
		return s
	}
	num := func() uint64 {
		v, k := binary.Uvarint(p)
		if k <= 0 {
			p = nil
			return 0
		}
		p = p[k:]
		return v
	}
	// Compare the id before copying anything.
	l, k := binary.Uvarint(p)
	if k <= 0 || l != uint64(len(id)) || uint64(len(p)-k) < l || string(p[k:k+int(l)]) != id {
		return r, false
	}
	p = p[k+int(l):]
	r.at, r.id = time.Unix(0, at), id
	r.key = str()
	r.seq = num()
	r.a = str()
	r.b = str()
	r.n = num()
	return r, p != nil
}

// memory returns the bytes held and the time of the oldest event kept.
func (t *tracer) memory() (bytes int, oldest time.Time) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		bytes += len(sh.chunks) * traceChunk
		if len(sh.chunks) > 0 {
			c := sh.chunks[(sh.cur+1)%len(sh.chunks)]
			if len(c) < 11 {
				c = sh.chunks[0]
			}
			if len(c) >= 11 {
				at := time.Unix(0, int64(binary.LittleEndian.Uint64(c[3:])))
				if oldest.IsZero() || at.Before(oldest) {
					oldest = at
				}
			}
		}
		sh.mu.Unlock()
	}
	return bytes, oldest
}

// The hops. Every method does nothing on a nil tracer. Keys are inbox
// keys (app/device), or group keys for fan-outs.

func (t *tracer) accepted(id, app, keyID string, devices int, group string) {
	if t != nil {
		t.add(traceAccepted, id, app+"/", 0, keyID, group, uint64(devices))
	}
}

func (t *tracer) stored(id, key string, seq uint64, route string, duplicate bool) {
	if t != nil {
		t.add(traceStored, id, key, seq, route, "", boolNum(duplicate))
	}
}

func (t *tracer) notStored(id, key string, delivered bool) {
	if t != nil {
		t.add(traceNotStored, id, key, 0, "", "", boolNum(delivered))
	}
}

// routed records the write of a delivery entry to node's stream, at the
// time the write was sent: the node may take the entry before the
// writer hears the answer.
func (t *tracer) routed(at time.Time, id, node string, targets int, err error) {
	if t != nil {
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		t.addAt(at, traceRouted, id, "", 0, node, msg, uint64(targets))
	}
}

func (t *tracer) handed(id, key string, seq uint64, session, via string) {
	if t != nil {
		t.add(traceHanded, id, key, seq, session, via, 0)
	}
}

func (t *tracer) missed(id, key string, seq uint64, why string) {
	if t != nil {
		t.add(traceMissed, id, key, seq, "", why, 0)
	}
}

func (t *tracer) written(id, key string, seq uint64, session string) {
	if t != nil {
		t.add(traceWritten, id, key, seq, session, "", 0)
	}
}

func (t *tracer) retransmitted(id, key string, seq uint64, session string, attempt int) {
	if t != nil {
		t.add(traceRetransmitted, id, key, seq, session, "", uint64(attempt))
	}
}

func (t *tracer) acked(id, key string, seq uint64, session string) {
	if t != nil {
		t.add(traceAcked, id, key, seq, session, "", 0)
	}
}

func (t *tracer) shed(id, key string, seq uint64, session string) {
	if t != nil {
		t.add(traceShed, id, key, seq, session, "", 0)
	}
}

func (t *tracer) fanout(id, group string, sessions int) {
	if t != nil {
		t.add(traceFanout, id, group, 0, "", "", uint64(sessions))
	}
}

func boolNum(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// event turns a record into the API's form.
func (t *tracer) event(r traceRecord) api.TraceEvent {
	e := api.TraceEvent{Time: r.at.UTC(), Node: t.node, Event: traceKindNames[r.kind], Seq: r.seq}
	if app, dev, ok := strings.Cut(r.key, "/"); ok {
		e.App, e.Device = app, dev
	}
	switch r.kind {
	case traceAccepted:
		e.APIKey, e.Devices = r.a, int(r.n)
		e.Group, e.Broadcast = r.b, r.b == "" && r.n == 0
	case traceStored:
		e.Route, e.Duplicate = r.a, r.n == 1
	case traceNotStored:
		e.Reason = "redis unreachable: not stored; no session of the device on this node"
		if r.n == 1 {
			e.Reason = "redis unreachable: not stored; handed once to the device's session on this node"
		}
	case traceRouted:
		e.To, e.Targets, e.Error = r.a, int(r.n), r.b
	case traceHanded:
		e.Session, e.Via = r.a, r.b
	case traceMissed:
		e.Reason = r.b
	case traceWritten, traceAcked, traceShed:
		e.Session = r.a
	case traceRetransmitted:
		e.Session, e.Attempt = r.a, int(r.n)
	case traceFanout:
		sessions := int(r.n)
		e.Sessions = &sessions
		e.Group, e.Device = e.Device, ""
		e.Broadcast = e.Group == ""
	}
	return e
}

// Trace returns this node's events of message id, oldest first: what it
// did with the message within the trace TTL, if it still holds them.
// Empty when tracing is off (Config.TraceMemory negative).
func (n *Node) Trace(id string) []api.TraceEvent {
	recs := n.trace.lookup(id)
	out := make([]api.TraceEvent, 0, len(recs))
	for _, r := range recs {
		out = append(out, n.trace.event(r))
	}
	return out
}

// TraceAccepted records that a front-end accepted message id for app:
// for devices of it (devices > 0), for a group, or for all of its
// connected devices (a broadcast: no devices and group ""). A front-end
// calls it once per message, after every check passed and just before
// PushDevices or PushGroup, so that the message's trace starts where the
// region took it, with the API key that authorized it.
func (n *Node) TraceAccepted(id string, app App, devices int, group string) {
	n.trace.accepted(id, app.ID(), app.KeyID(), devices, group)
}
