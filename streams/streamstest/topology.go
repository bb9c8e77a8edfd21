package streamstest

import (
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TopologyEnv names the environment variable that picks what Start runs:
// "single" (or unset) for one server, "cluster" for a Redis Cluster of
// three primaries. CI runs the Store and delivery suites once each way:
//
//	PUSHD_TEST_REDIS=cluster go test ./streams/... ./appliance -run 'TestStore_|TestDurable_'
const TopologyEnv = "PUSHD_TEST_REDIS"

// Redis is a deployment a test runs against: a *Server or a *Cluster.
type Redis interface {
	// Connect returns a client built from URL by redisurl, as pushd builds
	// its own, closed when the test ends.
	Connect(t testing.TB) redis.UniversalClient
	// URL is the deployment as pushd's --redis takes it.
	URL() string
	// Stop kills every server (SIGKILL); Restart starts them again with
	// their data; Pause and Resume stop and continue them (SIGSTOP,
	// SIGCONT).
	Stop()
	Restart()
	Pause()
	Resume()
	// FlushAll empties every primary, as a Redis that lost its data.
	FlushAll(t testing.TB)
}

var (
	_ Redis = (*Server)(nil)
	_ Redis = (*Cluster)(nil)
)

// Start starts the topology TopologyEnv names, with opts: StartRedis or
// StartCluster. An unknown value fails the test rather than quietly
// running the default.
func Start(t testing.TB, opts ...Option) Redis {
	t.Helper()
	switch v := os.Getenv(TopologyEnv); v {
	case "", "single":
		return StartRedis(t, opts...)
	case "cluster":
		return StartCluster(t, opts...)
	default:
		t.Fatalf("streamstest: %s=%q: want single or cluster", TopologyEnv, v)
		return nil
	}
}

// IsCluster reports whether rdb is a cluster client, for tests whose setup
// commands must reach every primary (FLUSHALL, SCRIPT FLUSH, DBSIZE).
func IsCluster(rdb redis.UniversalClient) bool {
	_, ok := rdb.(*redis.ClusterClient)
	return ok
}
