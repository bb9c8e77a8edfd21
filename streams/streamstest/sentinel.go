package streamstest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the name the Sentinels of StartSentinel monitor the
// primary under.
const SentinelMaster = "pushd"

// sentinels is how many Sentinels StartSentinel runs, with a quorum of
// two: as on a region's three hosts.
const sentinels = 3

// DownAfter sets the Sentinels' down-after-milliseconds: how long the
// primary must be unreachable before they fail it over. StartSentinel's
// default is 1 s (production wants seconds; tests want failovers to be
// quick, and at 500 ms a loaded 2-core machine saw spurious ones).
func DownAfter(d time.Duration) Option {
	return func(o *options) { o.downAfter = d }
}

// Sentinel is a primary, its replicas (one by default) and three
// Sentinels that watch it (quorum two), each a real redis-server on free
// loopback ports with its own temporary directory. Killing the primary
// (Primary().Stop()) makes the Sentinels promote a replica; a killed
// server restarted with Restart comes back as a replica of whichever
// primary the Sentinels name, as a host's systemd unit would bring it
// back.
type Sentinel struct {
	tb        testing.TB
	servers   []*Server // data servers; servers[0] started as the primary
	sentinels []*Server
}

// StartSentinel starts a primary, Replicas(n) replicas (default 1) and
// three Sentinels, and waits until the replicas are in sync and every
// Sentinel knows every replica and the other Sentinels, so that a
// failover can happen from the start. Everything is killed when the test
// ends. AppendFsync, Args and Binary apply to the data servers, DownAfter
// to the Sentinels.
func StartSentinel(t testing.TB, opts ...Option) *Sentinel {
	t.Helper()
	o := newOptions(t, opts)
	replicas := o.replicas
	if replicas < 0 {
		replicas = 1
	}
	downAfter := o.downAfter
	if downAfter <= 0 {
		downAfter = time.Second
	}
	s := &Sentinel{tb: t}
	primary := startServer(t, o)
	s.servers = append(s.servers, primary)
	for i := 0; i < replicas; i++ {
		ro := o
		ro.replicaOf = primary.Addr()
		s.servers = append(s.servers, startServer(t, ro))
	}
	so := options{binary: o.binary, sentinel: primary.Addr(), downAfter: downAfter}
	for i := 0; i < sentinels; i++ {
		s.sentinels = append(s.sentinels, startServer(t, so))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.waitHealthy(ctx, primary, replicas); err != nil {
		t.Fatalf("streamstest: sentinel set did not settle: %v", err)
	}
	return s
}

// sentinelConf writes the Sentinel's configuration file on its first
// start; a Sentinel rewrites the file as it learns the region (replicas,
// other Sentinels, failovers), and a restart reads it back.
func (s *Server) sentinelConf(logPath string) (string, error) {
	host, port, _ := strings.Cut(s.opts.sentinel, ":")
	down := s.opts.downAfter.Milliseconds()
	return s.writeConf("sentinel.conf", []string{
		"port " + strconv.Itoa(s.port),
		"bind 127.0.0.1",
		"daemonize no",
		fmt.Sprintf("logfile %q", logPath),
		fmt.Sprintf("dir %q", s.dir),
		fmt.Sprintf("sentinel monitor %s %s %s %d", SentinelMaster, host, port, sentinels/2+1),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", SentinelMaster, down),
		// A failover that makes no progress is abandoned (and retried)
		// after this long; ten times down-after keeps tests quick.
		fmt.Sprintf("sentinel failover-timeout %s %d", SentinelMaster, max(10*down, 3000)),
		fmt.Sprintf("sentinel parallel-syncs %s 1", SentinelMaster),
	})
}

// URL returns the set as pushd's --redis takes it: every Sentinel and the
// master name.
func (s *Sentinel) URL() string {
	return "redis-sentinel://" + strings.Join(s.SentinelAddrs(), ",") + "/" + SentinelMaster
}

// Connect returns a client built from URL by redisurl, as pushd builds
// its own: a failover client that asks the Sentinels for the primary.
func (s *Sentinel) Connect(t testing.TB) redis.UniversalClient { return connect(t, s.URL()) }

// SentinelAddrs returns the Sentinels' host:port.
func (s *Sentinel) SentinelAddrs() []string {
	out := make([]string, len(s.sentinels))
	for i, sn := range s.sentinels {
		out[i] = sn.Addr()
	}
	return out
}

// Servers returns the data servers; the first was started as the primary.
func (s *Sentinel) Servers() []*Server { return s.servers }

// Sentinels returns the Sentinel processes.
func (s *Sentinel) Sentinels() []*Server { return s.sentinels }

// Primary returns the data server the Sentinels name as primary now. It
// fails the test when they name none of them or cannot be asked.
func (s *Sentinel) Primary() *Server {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr, err := s.primaryAddr(ctx)
	if err != nil {
		s.tb.Fatalf("streamstest: %v", err)
	}
	srv := s.server(addr)
	if srv == nil {
		s.tb.Fatalf("streamstest: the Sentinels name %s, not one of the data servers", addr)
	}
	return srv
}

// WaitFailover waits until every Sentinel names a primary other than old,
// that server says it is a primary, and every Sentinel has had a PING
// answered by it, then returns it. It fails the test after timeout.
//
// The last condition matters to a test that restarts the old primary
// next: restarted while a Sentinel's link to the new primary is still
// waiting for its first answer, it was seen here to set off a second
// failover, back to the restarted server.
func (s *Sentinel) WaitFailover(old *Server, timeout time.Duration) *Server {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		addr, err := s.primaryAddr(ctx)
		if err == nil && addr == old.Addr() {
			err = errors.New("the Sentinels still name " + addr)
		}
		if err == nil {
			err = s.settled(ctx, s.server(addr), 0)
		}
		if err == nil {
			return s.server(addr)
		}
		select {
		case <-ctx.Done():
			s.tb.Fatalf("streamstest: no failover from %s within %v: %v", old.Addr(), timeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Failovers returns how many failovers the Sentinels have made (the
// master's config epoch, as the first running Sentinel knows it).
func (s *Sentinel) Failovers() int {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, sn := range s.sentinels {
		if !sn.running() {
			continue
		}
		m, err := sentinelMaster(ctx, sn.Addr())
		if err != nil {
			s.tb.Fatalf("streamstest: %v", err)
		}
		n, _ := strconv.Atoi(m["config-epoch"])
		return n
	}
	s.tb.Fatalf("streamstest: no Sentinel runs")
	return 0
}

// WaitHealthy waits until every data server that runs is either the
// primary the Sentinels name or its replica in sync, and the primary sees
// them all online: after a restarted server rejoined, say.
func (s *Sentinel) WaitHealthy(timeout time.Duration) {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		addr, err := s.primaryAddr(ctx)
		if err == nil {
			running := 0
			for _, srv := range s.servers {
				if srv.running() {
					running++
				}
			}
			err = s.waitHealthy(ctx, s.server(addr), running-1)
		}
		if err == nil {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			s.tb.Fatalf("streamstest: sentinel set not healthy within %v: %v", timeout, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitHealthy waits until primary has replicas replicas online and every
// Sentinel knows them and the other Sentinels.
func (s *Sentinel) waitHealthy(ctx context.Context, primary *Server, replicas int) error {
	if primary == nil {
		return errors.New("the Sentinels name no data server")
	}
	var last error
	for {
		if last = s.settled(ctx, primary, replicas); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Sentinel) settled(ctx context.Context, primary *Server, replicas int) error {
	if primary == nil {
		return errors.New("the Sentinels name no data server")
	}
	rdb := redis.NewClient(&redis.Options{Addr: primary.Addr(), ContextTimeoutEnabled: true, DialTimeout: time.Second, MaxRetries: -1})
	info, err := rdb.Info(ctx, "replication").Result()
	_ = rdb.Close()
	if err != nil {
		return fmt.Errorf("primary %s: %w", primary.Addr(), err)
	}
	if !strings.Contains(info, "role:master") {
		return fmt.Errorf("%s is not a primary yet", primary.Addr())
	}
	if online := strings.Count(info, ",state=online,"); online < replicas {
		return fmt.Errorf("primary %s has %d of %d replicas online", primary.Addr(), online, replicas)
	}
	for _, sn := range s.sentinels {
		if !sn.running() {
			continue
		}
		m, err := sentinelMaster(ctx, sn.Addr())
		if err != nil {
			return err
		}
		if m["ip"]+":"+m["port"] != primary.Addr() || m["flags"] != "master" {
			return fmt.Errorf("sentinel %s sees %s:%s flags %s", sn.Addr(), m["ip"], m["port"], m["flags"])
		}
		// A Sentinel remembers a replica that went down, so it may know
		// more than run.
		if n, _ := strconv.Atoi(m["num-slaves"]); n < replicas || m["num-other-sentinels"] != strconv.Itoa(len(s.sentinels)-1) {
			return fmt.Errorf("sentinel %s knows %s replicas and %s other sentinels", sn.Addr(), m["num-slaves"], m["num-other-sentinels"])
		}
		// A PING still unanswered: the Sentinel's link to the primary is
		// new (just after a failover) and it may yet take it for down.
		if m["last-ping-sent"] != "0" {
			return fmt.Errorf("sentinel %s: a PING to the primary unanswered for %s ms", sn.Addr(), m["last-ping-sent"])
		}
	}
	return nil
}

// primaryAddr asks the Sentinels for the primary's address: they must all
// (those running) agree.
func (s *Sentinel) primaryAddr(ctx context.Context) (string, error) {
	addr := ""
	for _, sn := range s.sentinels {
		if !sn.running() {
			continue
		}
		sc := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr(), ContextTimeoutEnabled: true, DialTimeout: time.Second, MaxRetries: -1})
		hp, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
		_ = sc.Close()
		if err != nil {
			return "", fmt.Errorf("sentinel %s: %w", sn.Addr(), err)
		}
		a := hp[0] + ":" + hp[1]
		if addr != "" && a != addr {
			return "", fmt.Errorf("the Sentinels disagree: %s and %s", addr, a)
		}
		addr = a
	}
	if addr == "" {
		return "", errors.New("no Sentinel runs")
	}
	return addr, nil
}

// server returns the data server at addr, or nil.
func (s *Sentinel) server(addr string) *Server {
	for _, srv := range s.servers {
		if srv.Addr() == addr {
			return srv
		}
	}
	return nil
}

// sentinelMaster is SENTINEL MASTER pushd as a map.
func sentinelMaster(ctx context.Context, addr string) (map[string]string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, DialTimeout: time.Second, MaxRetries: -1})
	defer sc.Close()
	m, err := sc.Master(ctx, SentinelMaster).Result()
	if err != nil {
		return nil, fmt.Errorf("sentinel %s: %w", addr, err)
	}
	return m, nil
}
