package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/redisurl"
)

// redisSetup is how this node uses the region's Redis: where it is and
// what a push answered stored promises.
type redisSetup struct {
	url redisurl.Options
	// durability is "strict" or "fast".
	durability string
	// waitReplicas is how many replicas confirm each push (strict only).
	waitReplicas int
	waitTimeout  time.Duration
}

// Durability modes.
const (
	durabilityStrict = "strict"
	durabilityFast   = "fast"
)

// Bounds of --redis-wait-timeout: a push waits this long at most for its
// replicas, inside the 2 s a push may spend on Redis.
const (
	minWaitTimeout = 10 * time.Millisecond
	maxWaitTimeout = time.Second
)

// parseRedisSetup checks --redis, --durability and the wait settings.
// The errors are configuration mistakes and never show a password.
func parseRedisSetup(o *options) (redisSetup, error) {
	u, err := redisurl.Parse(o.Redis)
	if err != nil {
		return redisSetup{}, fmt.Errorf("--redis %w", err)
	}
	r := redisSetup{url: u, durability: o.Durability, waitTimeout: o.RedisWaitTimeout}
	switch {
	case r.durability != durabilityStrict && r.durability != durabilityFast:
		return r, fmt.Errorf("--durability %q: want strict or fast", r.durability)
	case r.waitTimeout < minWaitTimeout || r.waitTimeout > maxWaitTimeout:
		return r, fmt.Errorf("--redis-wait-timeout %s: must be %s..%s", r.waitTimeout, minWaitTimeout, maxWaitTimeout)
	}
	switch {
	case o.RedisWaitReplicas != nil:
		r.waitReplicas = *o.RedisWaitReplicas
	case r.durability == durabilityStrict && u.Topology != redisurl.Single:
		// A topology that fails over: a push is stored once a replica
		// that can be promoted has it.
		r.waitReplicas = 1
	}
	switch {
	case r.waitReplicas < 0:
		return r, fmt.Errorf("--redis-wait-replicas %d: must be 0 or more", r.waitReplicas)
	case r.waitReplicas > 0 && r.durability == durabilityFast:
		return r, fmt.Errorf("--redis-wait-replicas %d with --durability fast: fast mode waits for no replica", r.waitReplicas)
	}
	return r, nil
}

// String describes the setup for logs and --check-config.
func (r redisSetup) String() string {
	s := fmt.Sprintf("%s, durability %s", r.url, r.durability)
	if r.waitReplicas > 0 {
		s += fmt.Sprintf(" (each push waits for %d replica(s), up to %s)", r.waitReplicas, r.waitTimeout)
	}
	return s
}

// redisCheckTimeout bounds checkRedis: a dial to a silent host, a few
// Sentinels to ask.
const redisCheckTimeout = 10 * time.Second

// checkRedis reads the region's Redis before the node changes anything
// (Raft, listeners): unreachable, it fails the start with what go-redis
// said; in strict mode, a primary whose appendfsync is not always is a
// configuration mistake (usageError). Too few replicas in sync for
// --redis-wait-replicas is logged: pushes answer 503 until they are.
func checkRedis(ctx context.Context, store *streams.Store, r redisSetup, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, redisCheckTimeout)
	defer cancel()
	if err := redisurl.Probe(ctx, r.url); err != nil {
		return fmt.Errorf("--redis %s: cannot reach Redis: %w", r.url, err)
	}
	top, err := store.Topology(ctx)
	if err != nil {
		return fmt.Errorf("--redis %s: cannot reach Redis: %w", r.url, err)
	}
	for _, p := range top.Primaries {
		if p.Role != "master" {
			return fmt.Errorf("--redis %s: %s is a replica, not a primary (point --redis at the primary, or use redis-sentinel://)", r.url, p.Addr)
		}
		if r.durability == durabilityStrict {
			switch p.AppendFsync {
			case "always":
			case "":
				log.Warn("cannot read appendfsync (CONFIG GET refused); strict durability needs appendfsync always on every primary", "primary", p.Addr)
			default:
				return usageError{fmt.Errorf("--durability strict needs appendfsync always on every Redis primary, and %s has %s: set it in redis.conf (systemd/redis-pushd.conf) or run pushd with --durability fast",
					p.Addr, p.AppendFsync)}
			}
		}
		online := 0
		for _, rep := range p.Replicas {
			if rep.State == "online" {
				online++
			}
		}
		if online < r.waitReplicas {
			log.Warn("a Redis primary has fewer replicas in sync than --redis-wait-replicas: pushes it serves are refused (503) until enough are",
				"primary", p.Addr, "replicas_online", online, "wait_replicas", r.waitReplicas)
		}
	}
	log.Info("redis", "setup", r.String(), "primaries", len(top.Primaries))
	return nil
}
