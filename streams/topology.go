package streams

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Topology is the region's Redis as the Store reaches it, for operators:
// its primaries (one, unless it is a cluster) and their replicas.
type Topology struct {
	Cluster   bool
	Primaries []Primary
	// WaitReplicas and WaitTimeout are the Store's configuration: how
	// many replicas must confirm an append, and for how long it waits.
	WaitReplicas int
	WaitTimeout  time.Duration
}

// Primary is one primary as it describes itself.
type Primary struct {
	// Addr is where the Store reaches it (host:port).
	Addr  string
	RunID string
	// Role is what the server says it is: "master", or "slave" when a
	// single-server URL names a replica (writes then fail).
	Role string
	// Slots is the slot ranges it serves on a cluster ("0-5460"); "" for
	// one primary.
	Slots string
	// AppendFsync is its appendfsync policy ("always", "everysec", "no");
	// "" when CONFIG GET is refused to pushd (renamed away).
	AppendFsync string
	// CPU is the redis-server's CPU time (user and system, its forked
	// children's included) since it started: differences between two
	// readings give Redis's cost of what happened in between.
	CPU      time.Duration
	Replicas []Replica
}

// Replica is one replica as its primary sees it (INFO replication).
type Replica struct {
	Addr string
	// State is "online" once it streams; "wait_bgsave", "send_bulk"
	// while it syncs.
	State string
	// Lag is how long ago it last acknowledged (whole seconds).
	Lag time.Duration
	// Behind is how many bytes of the replication stream it had not
	// acknowledged then.
	Behind int64
}

// Topology reads every primary's replication, CPU and appendfsync, one
// pipeline per primary (concurrently on a cluster).
func (s *Store) Topology(ctx context.Context) (Topology, error) {
	t := Topology{Cluster: s.cluster != nil, WaitReplicas: s.cfg.WaitReplicas, WaitTimeout: s.cfg.WaitTimeout}
	if s.cluster == nil {
		p, err := describePrimary(ctx, s.rdb, "")
		if err != nil {
			return t, wrap("topology", "", err)
		}
		t.Primaries = []Primary{p}
		return t, nil
	}
	shards, err := s.cluster.ClusterShards(ctx).Result()
	if err != nil {
		return t, wrap("topology", "cluster shards", err)
	}
	ranges := map[string][]string{}
	first := map[string]int64{} // a primary's lowest slot, to list them in slot order
	for _, sh := range shards {
		for _, n := range sh.Nodes {
			if n.Role != "master" {
				continue
			}
			a := net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
			sort.Slice(sh.Slots, func(i, j int) bool { return sh.Slots[i].Start < sh.Slots[j].Start })
			for _, sl := range sh.Slots {
				if _, ok := first[a]; !ok {
					first[a] = sl.Start
				}
				ranges[a] = append(ranges[a], fmt.Sprintf("%d-%d", sl.Start, sl.End))
			}
		}
	}
	var mu sync.Mutex
	err = s.cluster.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		p, err := describePrimary(ctx, m, m.Options().Addr)
		if err != nil {
			return err
		}
		p.Slots = strings.Join(ranges[p.Addr], ",")
		mu.Lock()
		t.Primaries = append(t.Primaries, p)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return t, wrap("topology", "primaries", err)
	}
	sort.Slice(t.Primaries, func(i, j int) bool { return first[t.Primaries[i].Addr] < first[t.Primaries[j].Addr] })
	return t, nil
}

// describePrimary reads one server's INFO and appendfsync in one pipeline.
// addr "" asks the server where the connection reached it (CLIENT INFO's
// laddr): a Sentinel client does not say which server it uses.
func describePrimary(ctx context.Context, rdb redis.Cmdable, addr string) (Primary, error) {
	pipe := rdb.Pipeline()
	info := pipe.Info(ctx, "server", "replication", "cpu")
	fsync := pipe.ConfigGet(ctx, "appendfsync")
	var client *redis.Cmd
	if addr == "" {
		client = pipe.Do(ctx, "CLIENT", "INFO")
	}
	_, _ = pipe.Exec(ctx)
	if err := info.Err(); err != nil {
		return Primary{}, err
	}
	in := info.Val()
	p := Primary{Addr: addr, RunID: infoField(in, "run_id"), Role: infoField(in, "role")}
	// CONFIG may be renamed away: the policy is then unknown.
	if v, err := fsync.Result(); err == nil {
		p.AppendFsync = v["appendfsync"]
	}
	if client != nil {
		if ci, err := client.Text(); err == nil {
			p.Addr = clientField(ci, "laddr")
		}
	}
	var cpu float64
	for _, f := range []string{"used_cpu_sys", "used_cpu_user", "used_cpu_sys_children", "used_cpu_user_children"} {
		v, _ := strconv.ParseFloat(infoField(in, f), 64)
		cpu += v
	}
	p.CPU = time.Duration(cpu * float64(time.Second))
	offset, _ := strconv.ParseInt(infoField(in, "master_repl_offset"), 10, 64)
	n, _ := strconv.Atoi(infoField(in, "connected_slaves"))
	for i := 0; i < n; i++ {
		r := parseReplica(infoField(in, "slave"+strconv.Itoa(i)), offset)
		if r.Addr != "" {
			p.Replicas = append(p.Replicas, r)
		}
	}
	return p, nil
}

// parseReplica reads "ip=…,port=…,state=…,offset=…,lag=…".
func parseReplica(v string, primaryOffset int64) Replica {
	f := map[string]string{}
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		f[k] = val
	}
	if f["ip"] == "" || f["port"] == "" {
		return Replica{}
	}
	off, _ := strconv.ParseInt(f["offset"], 10, 64)
	lag, _ := strconv.Atoi(f["lag"])
	return Replica{Addr: f["ip"] + ":" + f["port"], State: f["state"],
		Lag: time.Duration(lag) * time.Second, Behind: max(primaryOffset-off, 0)}
}

// infoField returns the value of "name:value" in an INFO reply.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), name+":"); ok {
			return v
		}
	}
	return ""
}

// clientField returns the value of "name=value" in a CLIENT INFO reply.
func clientField(info, name string) string {
	for _, kv := range strings.Fields(info) {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}
