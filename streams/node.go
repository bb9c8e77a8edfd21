package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// NodeInfo is what a node publishes about itself with each heartbeat.
type NodeInfo struct {
	ID         string
	DeviceAddr string
	TCPAddr    string
	Conns      int64
	// Refusing says why the node takes no new devices right now
	// ("starting", "draining", "stopping", "full"); empty while it does.
	// Dispatch names no node that refuses.
	Refusing string    `json:",omitempty"`
	Updated  time.Time // zero means the time of the Heartbeat call
}

// Heartbeat stores info under the node's heartbeat key with a TTL of NodeTTL
// and adds the node to the node set, in one pipeline (one script call and
// one SADD). A node calls it every second or so, from one goroutine.
//
// continued reports whether Redis kept this node's heartbeats since this
// Store's previous successful Heartbeat for info.ID, on the same Redis
// process. It is true only when all of these hold:
//
//   - this Store already returned a result for info.ID (the first call for a
//     node id on a Store, that is the first after the process started,
//     always reports false);
//   - the heartbeat key still holds the value that call wrote, or one
//     written after it by calls that failed here but were applied in Redis
//     (those carry the check forward, so a loss is reported even when the
//     reply of the call that found it was lost);
//   - that value was written by the redis-server process serving the key
//     now: same INFO run_id, so Redis was neither restarted nor failed over
//     in between (skipped where INFO is refused to scripts).
//
// So continued is false after: the node stalled or its heartbeats failed
// for longer than NodeTTL (the key expired); FLUSHALL, FLUSHDB, a DEL or an
// eviction removed the key; Redis restarted, whether or not it lost writes
// (a crash under appendfsync everysec, a server without persistence); a
// failover promoted a replica, however far it lagged; the key was rolled
// back to an older heartbeat or overwritten by another process using the
// same node id. On a cluster it also reads every primary's run id
// (INFO server, once per call) and is false when the set changed since
// the last call: a primary of any shard failed over or restarted (or the
// set could not be read).
//
// A false from any call but the first for a node id means Redis may have
// lost this node's routes and inbox state: the caller should re-check them
// at once (the appliance runs its route refresh) rather than wait for the
// periodic refresh. What it cannot see is a loss of other keys while the
// heartbeat key survives on the same process: route or inbox keys evicted
// under maxmemory, or deleted by hand.
//
// On error continued is false and says nothing; the next successful call
// reports what happened meanwhile. Calls for one node id are meant to come
// one at a time: concurrent ones are safe but may report false.
func (s *Store) Heartbeat(ctx context.Context, info NodeInfo) (continued bool, err error) {
	if !validID(info.ID) {
		return false, fmt.Errorf("heartbeat: node id %q: %w", info.ID, ErrInvalidArgument)
	}
	if info.Updated.IsZero() {
		info.Updated = time.Now()
	}
	b, err := json.Marshal(info)
	if err != nil {
		return false, fmt.Errorf("heartbeat %s: %w", info.ID, err)
	}
	token := newToken()
	s.hbMu.Lock()
	after := s.hbLast[info.ID]
	s.hbMu.Unlock()

	// As runScripts, with the SADD in the same pipeline: the node set has no
	// hash tag, so it cannot be one of the script's keys on a cluster.
	keys := []string{heartbeatKey(info.ID)}
	args := []any{b, token, after, max(s.cfg.NodeTTL.Milliseconds(), 1)}
	pipe := s.rdb.Pipeline()
	hb := heartbeatScript.EvalSha(ctx, pipe, keys, args...)
	add := pipe.SAdd(ctx, nodesKey, info.ID)
	_, _ = pipe.Exec(ctx)
	if redis.HasErrorPrefix(hb.Err(), "NOSCRIPT") {
		// Refused, so not run: sending it again cannot apply it twice.
		hb = heartbeatScript.Eval(ctx, s.rdb, keys, args...)
	}
	err = hb.Err()
	if err == nil {
		err = add.Err()
	}
	if err != nil {
		return false, wrap("heartbeat", info.ID, err)
	}
	continued = hb.Val() == int64(1)
	// On a cluster the script sees the heartbeat key's primary only; the
	// node's routes and inboxes live on every primary. A primary replaced
	// (failed over, restarted) since the last heartbeat changes the set of
	// run ids.
	var runs string
	if s.cluster != nil {
		runs, err = s.primaryRuns(ctx)
		if err != nil {
			// Continuity unproven; the next heartbeat compares with the
			// last set that was read.
			continued = false
		}
	}
	s.hbMu.Lock()
	s.hbLast[info.ID] = token
	if s.cluster != nil && err == nil {
		continued = continued && s.hbRuns[info.ID] == runs
		s.hbRuns[info.ID] = runs
	}
	s.hbMu.Unlock()
	return continued, nil
}

// primaryRuns returns the run ids of a cluster's primaries, sorted and
// joined: it changes when a primary is replaced or restarted.
func (s *Store) primaryRuns(ctx context.Context) (string, error) {
	var mu sync.Mutex
	var runs []string
	err := s.cluster.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		info, err := m.Info(ctx, "server").Result()
		if err != nil {
			return err
		}
		mu.Lock()
		runs = append(runs, infoField(info, "run_id"))
		mu.Unlock()
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(runs)
	return strings.Join(runs, ","), nil
}

// Nodes returns the live nodes (heartbeat key present) and the dead ones (in
// the node set, heartbeat expired), each sorted by id.
func (s *Store) Nodes(ctx context.Context) (live []NodeInfo, dead []string, err error) {
	ids, err := s.rdb.SMembers(ctx, nodesKey).Result()
	if err != nil {
		return nil, nil, wrap("nodes", nodesKey, err)
	}
	if len(ids) == 0 {
		return nil, nil, nil
	}
	sort.Strings(ids)
	pipe := s.rdb.Pipeline()
	gets := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		gets[i] = pipe.Get(ctx, heartbeatKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, wrap("nodes", "heartbeats", err)
	}
	for i, id := range ids {
		b, err := gets[i].Bytes()
		if errors.Is(err, redis.Nil) {
			dead = append(dead, id)
			continue
		}
		if err != nil {
			return nil, nil, wrap("nodes", heartbeatKey(id), err)
		}
		var info NodeInfo
		if err := json.Unmarshal(b, &info); err != nil {
			return nil, nil, fmt.Errorf("nodes: decode %s: %w", heartbeatKey(id), err)
		}
		live = append(live, info)
	}
	return live, dead, nil
}
