package streamstest

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterNodeTimeout is the nodes' cluster-node-timeout: how long a node
// may be unreachable before the others mark it failing (and, with
// replicas, fail it over). Short, so a failover test is quick; longer
// than any pause the fault tests make on purpose.
const clusterNodeTimeout = 2 * time.Second

// clusterPrimaries is how many primaries StartCluster forms: the fewest
// redis-cli --cluster create accepts.
const clusterPrimaries = 3

// Cluster is a Redis Cluster of three primaries (and their replicas, if
// asked for), each a real redis-server on free loopback ports with its data
// in its own temporary directory, formed by redis-cli --cluster create.
// Stop, Restart, Pause and Resume act on every node; a node's own Server
// (Nodes) acts on that node alone.
type Cluster struct {
	tb    testing.TB
	nodes []*Server
	cli   string
}

// StartCluster starts 3 × (1 + replicas) cluster-enabled servers, forms
// the cluster, and waits until every node sees every slot served and
// every replica in sync. It kills them all when the test ends. Options
// apply to every node (AppendFsync, Args, Binary, Replicas).
func StartCluster(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	o := newOptions(t, opts)
	o.cluster = true
	replicas := max(o.replicas, 0)
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("streamstest: redis-cli not found in PATH (install the redis-tools package): %v", err)
	}
	c := &Cluster{tb: t, cli: cli}
	for i := 0; i < clusterPrimaries*(1+replicas); i++ {
		c.nodes = append(c.nodes, startServer(t, o))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// redis-cli makes the first three primaries and assigns the rest as
	// their replicas.
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", fmt.Sprint(replicas), "--cluster-yes")
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("streamstest: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.waitHealthy(ctx); err != nil {
		t.Fatalf("streamstest: cluster did not form: %v\n%s", err, out)
	}
	return c
}

// Nodes returns every node: the first three started as primaries.
func (c *Cluster) Nodes() []*Server { return c.nodes }

// Addrs returns every node's host:port.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		out[i] = s.Addr()
	}
	return out
}

// URL returns the cluster as pushd's --redis takes it: every node as a
// seed.
func (c *Cluster) URL() string { return "redis-cluster://" + strings.Join(c.Addrs(), ",") }

// Connect returns a client built from URL by redisurl, as pushd builds
// its own (a *redis.ClusterClient), closed in t.Cleanup.
func (c *Cluster) Connect(t testing.TB) redis.UniversalClient { return connect(t, c.URL()) }

// Client returns Connect's client as the *redis.ClusterClient it is.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	return c.Connect(t).(*redis.ClusterClient)
}

// FlushAll empties every primary (FLUSHALL on each), failing the test if
// one cannot.
func (c *Cluster) FlushAll(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.Client(t).ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		return m.FlushAll(ctx).Err()
	})
	if err != nil {
		t.Fatalf("streamstest: FLUSHALL on every primary: %v", err)
	}
}

// Stop kills every node with SIGKILL.
func (c *Cluster) Stop() { c.each((*Server).Stop) }

// Restart kills every node and starts it again with its data and cluster
// configuration, and waits until the cluster serves every slot again.
func (c *Cluster) Restart() {
	c.tb.Helper()
	c.each((*Server).Restart)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.waitHealthy(ctx); err != nil {
		c.tb.Fatalf("streamstest: cluster after restart: %v", err)
	}
}

// Pause stops every node with SIGSTOP.
func (c *Cluster) Pause() { c.each((*Server).Pause) }

// Resume continues every node stopped by Pause.
func (c *Cluster) Resume() { c.each((*Server).Resume) }

func (c *Cluster) each(f func(*Server)) {
	for _, s := range c.nodes {
		f(s)
	}
}

// waitHealthy waits until every node says cluster_state:ok, knows every
// other node and sees its replicas in sync.
func (c *Cluster) waitHealthy(ctx context.Context) error {
	var last error
	for {
		if last = c.healthy(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *Cluster) healthy(ctx context.Context) error {
	for _, s := range c.nodes {
		rdb := redis.NewClient(&redis.Options{Addr: s.Addr(), ContextTimeoutEnabled: true, DialTimeout: time.Second, MaxRetries: -1})
		info, err := rdb.ClusterInfo(ctx).Result()
		var repl string
		if err == nil {
			repl, err = rdb.Info(ctx, "replication").Result()
		}
		_ = rdb.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", s.Addr(), err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster state not ok", s.Addr())
		}
		if want := fmt.Sprintf("cluster_known_nodes:%d\r", len(c.nodes)); !strings.Contains(info, want) {
			return fmt.Errorf("%s: does not know all %d nodes yet", s.Addr(), len(c.nodes))
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("%s: replica not in sync", s.Addr())
		}
	}
	return nil
}
