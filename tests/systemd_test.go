package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams/streamstest"
)

// TestSystemd_RedisAndSentinelConfigs runs the shipped Redis and Sentinel
// configuration: a primary with redis-pushd.conf included, a replica with
// redis-pushd-replica.conf appended (its address pointed at the primary),
// and a Sentinel from sentinel-pushd.conf (its addresses, port and paths
// pointed at this test's) that finds the primary and its replica.
func TestSystemd_RedisAndSentinelConfigs(t *testing.T) {
	t.Parallel()
	// Absolute: redis-server reads the include after its dir directive
	// has changed its working directory.
	include, err := filepath.Abs(filepath.Join("..", "systemd", "redis-pushd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	primary := streamstest.StartRedis(t, streamstest.Args("--include", include))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conf, err := primary.Client(t).ConfigGet(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"appendfsync": "always", "appendonly": "yes", "stream-node-max-bytes": "1024",
		"maxmemory-policy": "noeviction", "repl-backlog-size": "268435456"} {
		if conf[k] != want {
			t.Errorf("%s = %q with redis-pushd.conf, want %q", k, conf[k], want)
		}
	}

	host, port, _ := strings.Cut(primary.Addr(), ":")
	dir := t.TempDir()
	replicaConf := filepath.Join(dir, "replica.conf")
	writeEdited(t, filepath.Join("..", "systemd", "redis-pushd-replica.conf"), replicaConf, "10.0.0.1 6379", host+" "+port)
	replica := streamstest.StartRedis(t, streamstest.Args("--include", include, "--include", replicaConf))
	poll.Until(t, 20*time.Second, func() error {
		info, err := replica.Client(t).Info(ctx, "replication").Result()
		if err == nil && !strings.Contains(info, "master_link_status:up") {
			err = fmt.Errorf("replica not in sync: %s", info)
		}
		return err
	})

	sport := freePorts(t, 1)[0]
	sconf := filepath.Join(dir, "sentinel.conf")
	writeEdited(t, filepath.Join("..", "systemd", "sentinel-pushd.conf"), sconf,
		"port 26379", fmt.Sprintf("port %d", sport),
		"bind 10.0.0.1 127.0.0.1", "bind 127.0.0.1",
		"supervised systemd", "supervised no",
		"pidfile /run/redis-sentinel-pushd/sentinel.pid", "pidfile "+filepath.Join(dir, "sentinel.pid"),
		"dir /var/lib/redis-sentinel-pushd", "dir "+dir,
		"10.0.0.1 6379", host+" "+port)
	cmd := exec.Command("redis-server", sconf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := redis.NewSentinelClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", sport), MaxRetries: -1})
	defer sc.Close()
	poll.Until(t, 30*time.Second, func() error {
		m, err := sc.Master(ctx, "pushd").Result()
		if err != nil {
			return err
		}
		if m["ip"]+":"+m["port"] != primary.Addr() || m["num-slaves"] != "1" || m["quorum"] != "2" || m["down-after-milliseconds"] != "5000" {
			return fmt.Errorf("sentinel sees %v", m)
		}
		return nil
	})
}

// writeEdited copies src to dst with each old string replaced by its new
// one (pairs), failing when one is not there: the shipped file changed.
func writeEdited(t *testing.T, src, dst string, pairs ...string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("%s has no %q", src, pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	if err := os.WriteFile(dst, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
