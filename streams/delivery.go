package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Delivery is one entry of a node's delivery stream: an opaque blob (the
// appliance encodes a batch of deliveries into one) and its stream id, which
// AckDeliveries takes.
type Delivery struct {
	ID   string
	Blob []byte
}

// Deliver appends each blob to its node's delivery stream (XADD MAXLEN ~
// DeliveryMaxLen), all in one pipeline. go-redis may resend an XADD after a
// read timeout, so a blob can arrive twice: delivery is at least once and
// devices dedupe by message id.
func (s *Store) Deliver(ctx context.Context, byNode map[string][][]byte) error {
	_, err := s.DeliverIDs(ctx, byNode)
	return err
}

// DeliverIDs is Deliver, and returns the id of the last entry it appended
// to each node's stream, for Delivered.
func (s *Store) DeliverIDs(ctx context.Context, byNode map[string][][]byte) (map[string]string, error) {
	pipe := s.rdb.Pipeline()
	last := map[string]*redis.StringCmd{}
	n := 0
	for node, blobs := range byNode {
		if !validID(node) {
			return nil, fmt.Errorf("deliver: node id %q: %w", node, ErrInvalidArgument)
		}
		for _, b := range blobs {
			last[node] = pipe.XAdd(ctx, &redis.XAddArgs{
				Stream: deliveryKey(node),
				MaxLen: s.cfg.DeliveryMaxLen,
				Approx: true,
				Values: []any{"d", b},
			})
			n++
		}
	}
	if n == 0 {
		return nil, nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, wrap("deliver", fmt.Sprintf("%d entries to %d nodes", n, len(byNode)), err)
	}
	ids := make(map[string]string, len(last))
	for node, c := range last {
		ids[node] = c.Val()
	}
	return ids, nil
}

// Delivered reports whether node has read every entry of its delivery
// stream up to id and acknowledged them (AckDeliveries): its consumer
// group's last delivered id is id or later, and none of them is pending.
// A stream that is gone (RetireNode) has nothing left to deliver.
func (s *Store) Delivered(ctx context.Context, node, id string) (bool, error) {
	if !validID(node) {
		return false, fmt.Errorf("delivered: node id %q: %w", node, ErrInvalidArgument)
	}
	want, ok := parseStreamID(id)
	if !ok {
		return false, fmt.Errorf("delivered: entry id %q: %w", id, ErrInvalidArgument)
	}
	pipe := s.rdb.Pipeline()
	groups := pipe.XInfoGroups(ctx, deliveryKey(node))
	pending := pipe.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: deliveryKey(node), Group: group, Start: "-", End: id, Count: 1})
	_, _ = pipe.Exec(ctx)
	switch err := groups.Err(); {
	case redis.HasErrorPrefix(err, "no such key"):
		return true, nil
	case err != nil:
		return false, wrap("delivered", deliveryKey(node), err)
	}
	if err := pending.Err(); err != nil && !redis.HasErrorPrefix(err, "NOGROUP") {
		return false, wrap("delivered: pending of", deliveryKey(node), err)
	}
	for _, g := range groups.Val() {
		if g.Name != group {
			continue
		}
		read, ok := parseStreamID(g.LastDeliveredID)
		return ok && !read.before(want) && len(pending.Val()) == 0, nil
	}
	return false, nil
}

// streamID is a stream entry id, ms-seq.
type streamID struct{ ms, seq uint64 }

func parseStreamID(id string) (streamID, bool) {
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return streamID{}, false
	}
	a, err1 := strconv.ParseUint(ms, 10, 64)
	b, err2 := strconv.ParseUint(seq, 10, 64)
	return streamID{a, b}, err1 == nil && err2 == nil
}

func (a streamID) before(b streamID) bool {
	return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq)
}

// EnsureGroup creates the consumer group on node's delivery stream, and the
// stream if needed. The group starts at the beginning of the stream, so
// entries written before the node first started are delivered too. An
// existing group is left alone.
func (s *Store) EnsureGroup(ctx context.Context, node string) error {
	if !validID(node) {
		return fmt.Errorf("ensure group: node id %q: %w", node, ErrInvalidArgument)
	}
	err := s.rdb.XGroupCreateMkStream(ctx, deliveryKey(node), group, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return wrap("ensure group on", deliveryKey(node), err)
	}
	return nil
}

// ReadDeliveries reads up to count (<= 0 means 100) new entries from node's
// own delivery stream as consumer node, waiting up to block for the first one
// (block <= 0 does not wait; it is never "forever"). No entries is not an
// error. If the group is missing (Redis lost its data), it is created again
// and the read retried once.
func (s *Store) ReadDeliveries(ctx context.Context, node string, count int, block time.Duration) ([]Delivery, error) {
	if !validID(node) {
		return nil, fmt.Errorf("read deliveries: node id %q: %w", node, ErrInvalidArgument)
	}
	if count <= 0 {
		count = 100 // XREADGROUP without COUNT would return the whole backlog
	}
	if block <= 0 {
		block = -1 // go-redis omits BLOCK for a negative value; 0 would block forever
	}
	read := func() ([]redis.XStream, error) {
		return s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group:    group,
			Consumer: node,
			Streams:  []string{deliveryKey(node), ">"},
			Count:    int64(count),
			Block:    block,
		}).Result()
	}
	res, err := read()
	if redis.HasErrorPrefix(err, "NOGROUP") {
		if err := s.EnsureGroup(ctx, node); err != nil {
			return nil, err
		}
		res, err = read()
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, wrap("read deliveries from", deliveryKey(node), err)
	}
	var out []Delivery
	for _, st := range res {
		for _, m := range st.Messages {
			out = append(out, Delivery{ID: m.ID, Blob: blob(m.Values["d"])})
		}
	}
	return out, nil
}

// PendingDeliveries returns up to count (<= 0 means 100) entries of node's
// own delivery stream that consumer node read and never acked, oldest
// first: what a node stopped between reading and acking left behind. They
// stay pending until acked with AckDeliveries, so a caller draining them
// calls again after each ack until it gets none. An entry the stream's cap
// has since trimmed comes back with a nil Blob.
func (s *Store) PendingDeliveries(ctx context.Context, node string, count int) ([]Delivery, error) {
	if !validID(node) {
		return nil, fmt.Errorf("pending deliveries: node id %q: %w", node, ErrInvalidArgument)
	}
	if count <= 0 {
		count = 100
	}
	res, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group:    group,
		Consumer: node,
		Streams:  []string{deliveryKey(node), "0"},
		Count:    int64(count),
		Block:    -1,
	}).Result()
	switch {
	case errors.Is(err, redis.Nil), redis.HasErrorPrefix(err, "NOGROUP"):
		return nil, nil
	case err != nil:
		return nil, wrap("read pending deliveries from", deliveryKey(node), err)
	}
	var out []Delivery
	for _, st := range res {
		for _, m := range st.Messages {
			out = append(out, Delivery{ID: m.ID, Blob: blob(m.Values["d"])})
		}
	}
	return out, nil
}

// AckDeliveries acknowledges entries of node's delivery stream (XACK), also
// entries that TakeOver handed to another consumer. The stream is capped, so
// acked entries are not deleted.
func (s *Store) AckDeliveries(ctx context.Context, node string, ids []string) error {
	if !validID(node) {
		return fmt.Errorf("ack deliveries: node id %q: %w", node, ErrInvalidArgument)
	}
	if len(ids) == 0 {
		return nil
	}
	return wrap("ack deliveries on", deliveryKey(node), s.rdb.XAck(ctx, deliveryKey(node), group, ids...).Err())
}

// TakeOver lets consumer, a live node, drain deadNode's delivery stream. It
// returns up to count entries: first pending ones idle at least ClaimMinIdle
// (XAUTOCLAIM; the dead node read them but never acked), then ones never
// delivered (XREADGROUP >). The caller acks them with
// AckDeliveries(deadNode, ids) and calls TakeOver until it returns nothing,
// then RetireNode. A restarted node recovers what it had read before it
// died with PendingDeliveries instead, which ignores ClaimMinIdle.
func (s *Store) TakeOver(ctx context.Context, deadNode, consumer string, count int) ([]Delivery, error) {
	if !validID(deadNode) || !validID(consumer) {
		return nil, fmt.Errorf("take over %q as %q: %w", deadNode, consumer, ErrInvalidArgument)
	}
	if count <= 0 {
		return nil, nil
	}
	calls := []scriptCall{{
		script: takeoverScript,
		keys:   []string{deliveryKey(deadNode)},
		args:   []any{group, consumer, count, s.cfg.ClaimMinIdle.Milliseconds()},
	}}
	if err := s.runScripts(ctx, calls); err != nil {
		return nil, wrap("take over", deliveryKey(deadNode), err)
	}
	rows, err := calls[0].cmd.Slice()
	if err != nil {
		return nil, fmt.Errorf("take over %s: %w", deliveryKey(deadNode), err)
	}
	out := make([]Delivery, 0, len(rows))
	for _, row := range rows {
		r, ok := row.([]any)
		if !ok || len(r) != 2 {
			return nil, fmt.Errorf("take over %s: unexpected entry %v", deliveryKey(deadNode), row)
		}
		d := Delivery{ID: str(r[0])}
		if fields, ok := r[1].([]any); ok {
			for j := 0; j+1 < len(fields); j += 2 {
				if str(fields[j]) == "d" {
					d.Blob = []byte(str(fields[j+1]))
				}
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// RetireNode deletes a dead node's delivery stream once it is drained and
// removes the node from the node set. It refuses with ErrNodeAlive while the
// node's heartbeat lives, and with ErrNotDrained while entries are pending
// or unread (keep calling TakeOver).
func (s *Store) RetireNode(ctx context.Context, node string) error {
	if !validID(node) {
		return fmt.Errorf("retire node: node id %q: %w", node, ErrInvalidArgument)
	}
	calls := []scriptCall{{
		script: retireScript,
		keys:   []string{deliveryKey(node), heartbeatKey(node)},
	}}
	if err := s.runScripts(ctx, calls); err != nil {
		return wrap("retire node", node, err)
	}
	n, err := calls[0].cmd.Int64()
	switch {
	case err != nil:
		return fmt.Errorf("retire node %s: %w", node, err)
	case n == -1:
		return fmt.Errorf("retire node %s: %w", node, ErrNodeAlive)
	case n == -2:
		return fmt.Errorf("retire node %s: %w", node, ErrNotDrained)
	}
	// The set lives in another slot, so it cannot be in the script. A node
	// that heartbeats again afterwards adds itself back.
	return wrap("retire node", node, s.rdb.SRem(ctx, nodesKey, node).Err())
}

// blob returns a stream field value as bytes.
func blob(v any) []byte {
	switch x := v.(type) {
	case string:
		return []byte(x)
	case []byte:
		return x
	}
	return nil
}
