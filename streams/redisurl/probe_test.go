package redisurl_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/freeport"
	"github.com/pushd/pushd/streams/redisurl"
	"github.com/pushd/pushd/streams/streamstest"
)

func probe(t *testing.T, url string) error {
	t.Helper()
	o, err := redisurl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return redisurl.Probe(ctx, o)
}

// closedAddr is a loopback address nothing listens on: a port of this
// process's freeport block, which no other test binary is given.
func closedAddr(t *testing.T) string {
	t.Helper()
	ports, err := freeport.Take(1)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
}

// Probe says which address failed and how, for each topology; one good
// address is enough.
func TestProbe(t *testing.T) {
	srv := streamstest.StartRedis(t)
	closed := closedAddr(t)
	if err := probe(t, srv.URL()); err != nil {
		t.Fatalf("a running server: %v", err)
	}
	if err := probe(t, "redis://"+closed+"/0"); err == nil || !strings.Contains(err.Error(), "the server did not answer ("+closed+": dial tcp") {
		t.Fatalf("a closed port: %v", err)
	}
	// A plain server is not a cluster node.
	if err := probe(t, "redis-cluster://"+srv.Addr()); err == nil || !strings.Contains(err.Error(), "no cluster node answered") ||
		!strings.Contains(err.Error(), "cluster support disabled") {
		t.Fatalf("a seed that is not a cluster node: %v", err)
	}

	sen := streamstest.StartSentinel(t)
	addrs := strings.Join(sen.SentinelAddrs(), ",")
	if err := probe(t, sen.URL()); err != nil {
		t.Fatalf("the Sentinel set: %v", err)
	}
	if err := probe(t, "redis-sentinel://"+closed+","+sen.SentinelAddrs()[0]+"/"+streamstest.SentinelMaster); err != nil {
		t.Fatalf("one Sentinel of two answering: %v", err)
	}
	if err := probe(t, "redis-sentinel://"+addrs+"/typo"); err == nil || !strings.Contains(err.Error(), `the Sentinels monitor no master named "typo"`) {
		t.Fatalf("a master name the Sentinels do not know: %v", err)
	}
	if err := probe(t, "redis-sentinel://"+closed+"/pushd"); err == nil || !strings.Contains(err.Error(), "no Sentinel answered ("+closed) {
		t.Fatalf("no Sentinel: %v", err)
	}
}
