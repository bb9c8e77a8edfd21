package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

// NodeInfo is what a node publishes about itself with each heartbeat.
type NodeInfo struct {
	ID         string
	DeviceAddr string
	TCPAddr    string
	PushAddr   string
	AdminAddr  string
	Conns      int64
	Updated    time.Time // zero means the time of the Heartbeat call
}

// Heartbeat stores info under the node's heartbeat key with a TTL of NodeTTL
// and adds the node to the node set, in one pipeline.
func (s *Store) Heartbeat(ctx context.Context, info NodeInfo) error {
	if !validID(info.ID) {
		return fmt.Errorf("heartbeat: node id %q: %w", info.ID, ErrInvalidArgument)
	}
	if info.Updated.IsZero() {
		info.Updated = time.Now()
	}
	b, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("heartbeat %s: %w", info.ID, err)
	}
	pipe := s.rdb.Pipeline()
	pipe.Set(ctx, heartbeatKey(info.ID), b, s.cfg.NodeTTL)
	pipe.SAdd(ctx, nodesKey, info.ID)
	_, err = pipe.Exec(ctx)
	return wrap("heartbeat", info.ID, err)
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
