// Package redisurl turns the URL of a region's Redis into a go-redis
// client. It is the one place where pushd (and the tests that run it) build
// that client, for all three topologies:
//
//	redis://[user:password@]host:port[/db]                    one server
//	rediss://…                                                 the same over TLS
//	unix://[user:password@]/path/to/redis.sock[?db=N]          one server on a Unix socket
//	redis-sentinel://[user:password@]host:port,host:port,…/master[/db]
//	                                                           the primary that Sentinel names
//	redis-cluster://[user:password@]host:port,host:port,…      a Redis Cluster from seed nodes
//
// Every form takes go-redis's client query parameters (dial_timeout,
// read_timeout, pool_size, max_retries, …; see redis.ParseURL); an unknown
// parameter is an error. A Sentinel URL's user and password are those of
// the Redis servers, not of the Sentinels. A port left out is 6379 for a
// server or cluster node and 26379 for a Sentinel.
//
//	o, err := redisurl.Parse("redis-sentinel://10.0.0.1,10.0.0.2,10.0.0.3/pushd")
//	if err != nil { ... }
//	rdb := redisurl.NewClient(o)
//
// Whatever the topology, the client comes from redis.NewUniversalClient:
// a *redis.Client for one server and for Sentinel (which follows the
// primary through failovers), a *redis.ClusterClient for a cluster.
package redisurl

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Topology is the shape of the region's Redis.
type Topology string

// The topologies a URL names.
const (
	// Single is one redis-server (possibly with replicas that nothing
	// fails over to).
	Single Topology = "single"
	// Sentinel is a primary with replicas, watched by Sentinels that
	// promote a replica when the primary fails; the client asks them
	// where the primary is.
	Sentinel Topology = "sentinel"
	// Cluster is a Redis Cluster: keys spread over several primaries by
	// hash slot.
	Cluster Topology = "cluster"
)

// Schemes of the Sentinel and Cluster forms.
const (
	SentinelScheme = "redis-sentinel"
	ClusterScheme  = "redis-cluster"
)

// Default ports of the address lists.
const (
	defaultPort         = "6379"
	defaultSentinelPort = "26379"
)

// Options is a parsed URL: how to reach the region's Redis. Parse fills
// it; NewClient turns it into a client. Zero tunables keep go-redis's
// defaults.
type Options struct {
	Topology Topology
	// Addrs is the server (Single: one address, or a socket path when
	// Network is "unix"), the Sentinels, or the cluster's seed nodes.
	Addrs []string
	// Network is "unix" for a socket path; "" or "tcp" otherwise.
	Network string
	// MasterName is the name the Sentinels monitor the primary under.
	MasterName string
	// DB is the database number (not with Cluster, which has only 0).
	DB int
	// Username and Password authenticate to the Redis servers.
	Username, Password string
	// TLSConfig is set by rediss://.
	TLSConfig *tls.Config

	// tune holds the client tunables from the URL's query.
	tune *redis.Options
}

// Parse reads a URL in one of the forms of the package documentation. It
// reports what is wrong with a malformed one; the error never holds the
// password.
func Parse(raw string) (Options, error) {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return Options{}, fmt.Errorf("%s: want redis://, rediss://, unix://, %s:// or %s://", Redact(raw), SentinelScheme, ClusterScheme)
	}
	switch scheme {
	case "redis", "rediss", "unix":
		ro, err := redis.ParseURL(raw)
		if err != nil {
			return Options{}, fmt.Errorf("%s: %w", Redact(raw), cleanErr(err))
		}
		return Options{Topology: Single, Addrs: []string{ro.Addr}, Network: ro.Network, DB: ro.DB,
			Username: ro.Username, Password: ro.Password, TLSConfig: ro.TLSConfig, tune: ro}, nil
	case SentinelScheme, ClusterScheme:
		o, err := parseList(scheme, raw[len(scheme)+3:])
		if err != nil {
			return Options{}, fmt.Errorf("%s: %w", Redact(raw), err)
		}
		return o, nil
	}
	return Options{}, fmt.Errorf("%s: unknown scheme %q: want redis://, rediss://, unix://, %s:// or %s://",
		Redact(raw), scheme, SentinelScheme, ClusterScheme)
}

// parseList reads the part after "scheme://" of a Sentinel or Cluster URL:
// [user:password@]host[:port],…[/path][?query].
func parseList(scheme, rest string) (Options, error) {
	o := Options{Topology: Sentinel, tune: &redis.Options{}}
	port := defaultSentinelPort
	if scheme == ClusterScheme {
		o.Topology, port = Cluster, defaultPort
	}
	rest, rawQuery, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		// url.Parse unescapes the user information as it would for any
		// URL; the host list it could not parse is replaced.
		u, err := url.Parse("redis://" + authority[:at] + "@host")
		if err != nil {
			return o, errors.New("malformed user information")
		}
		o.Username = u.User.Username()
		o.Password, _ = u.User.Password()
		authority = authority[at+1:]
	}
	if authority == "" {
		return o, errors.New("no address: list host:port,… after ://")
	}
	seen := map[string]bool{}
	for _, a := range strings.Split(authority, ",") {
		addr, err := hostPort(a, port)
		if err != nil {
			return o, err
		}
		if seen[addr] {
			return o, fmt.Errorf("address %s listed twice", addr)
		}
		seen[addr] = true
		o.Addrs = append(o.Addrs, addr)
	}

	segs := strings.FieldsFunc(path, func(r rune) bool { return r == '/' })
	switch {
	case o.Topology == Cluster && len(segs) > 0:
		return o, fmt.Errorf("path /%s: a cluster URL has none (a cluster has only database 0)", path)
	case o.Topology == Sentinel && len(segs) == 0:
		return o, errors.New("no master name: end the URL with /<master name> as the Sentinels monitor it")
	case o.Topology == Sentinel && len(segs) > 2:
		return o, fmt.Errorf("path /%s: want /<master name>[/<db>]", path)
	case o.Topology == Sentinel:
		o.MasterName = segs[0]
		if len(segs) == 2 {
			db, err := strconv.Atoi(segs[1])
			if err != nil || db < 0 {
				return o, fmt.Errorf("database %q: not a number", segs[1])
			}
			o.DB = db
		}
	}
	if rawQuery != "" {
		// The same query parameters as a redis:// URL, read by go-redis.
		tune, err := redis.ParseURL("redis://localhost/?" + rawQuery)
		if err != nil {
			return o, cleanErr(err)
		}
		if q, _ := url.ParseQuery(rawQuery); q.Has("db") {
			if o.Topology == Cluster {
				return o, errors.New("db: a cluster has only database 0")
			}
			o.DB = tune.DB
		}
		o.tune = tune
	}
	return o, nil
}

// hostPort checks one host[:port] of a list and adds the default port.
func hostPort(a, port string) (string, error) {
	if a == "" {
		return "", errors.New("empty address in the list")
	}
	host, p, err := net.SplitHostPort(a)
	if err != nil {
		// No port: the whole item is the host (brackets around IPv6).
		host, p = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]"), port
		if strings.ContainsAny(host, "[]") {
			return "", fmt.Errorf("address %q: malformed", a)
		}
	}
	if host == "" {
		return "", fmt.Errorf("address %q: no host", a)
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("address %q: port %q is not 1-65535", a, p)
	}
	return net.JoinHostPort(host, p), nil
}

// cleanErr drops go-redis's "redis: " prefix, which reads oddly after the
// URL.
func cleanErr(err error) error {
	return errors.New(strings.TrimPrefix(err.Error(), "redis: "))
}

// Redact returns raw with any password replaced by "xxxxx", for messages
// and logs. It works on malformed URLs too.
func Redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return raw
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return raw
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}

// String describes where the options point, without credentials: "single
// 10.0.0.5:6379 db 0", "sentinel master pushd via 10.0.0.1:26379,…",
// "cluster seeds 10.0.0.1:6379,…".
func (o Options) String() string {
	addrs := strings.Join(o.Addrs, ",")
	switch o.Topology {
	case Sentinel:
		return fmt.Sprintf("sentinel master %s db %d via %s", o.MasterName, o.DB, addrs)
	case Cluster:
		return "cluster seeds " + addrs
	}
	return fmt.Sprintf("single %s db %d", addrs, o.DB)
}

// Universal returns the go-redis options for o, with
// ContextTimeoutEnabled set (streams needs context deadlines to bound
// socket I/O).
func (o Options) Universal() *redis.UniversalOptions {
	t := o.tune
	if t == nil {
		t = &redis.Options{}
	}
	u := &redis.UniversalOptions{
		Addrs:      o.Addrs,
		DB:         o.DB,
		Username:   o.Username,
		Password:   o.Password,
		TLSConfig:  o.TLSConfig,
		MasterName: o.MasterName,
		// One seed address is still a cluster.
		IsClusterMode: o.Topology == Cluster,

		ContextTimeoutEnabled: true,

		ClientName:              t.ClientName,
		Protocol:                t.Protocol,
		MaxRetries:              t.MaxRetries,
		MinRetryBackoff:         t.MinRetryBackoff,
		MaxRetryBackoff:         t.MaxRetryBackoff,
		DialTimeout:             t.DialTimeout,
		ReadTimeout:             t.ReadTimeout,
		WriteTimeout:            t.WriteTimeout,
		PoolFIFO:                t.PoolFIFO,
		PoolSize:                t.PoolSize,
		PoolTimeout:             t.PoolTimeout,
		MinIdleConns:            t.MinIdleConns,
		MaxIdleConns:            t.MaxIdleConns,
		MaxActiveConns:          t.MaxActiveConns,
		ConnMaxIdleTime:         t.ConnMaxIdleTime,
		ConnMaxLifetime:         t.ConnMaxLifetime,
		PipelinePoolSize:        t.PipelinePoolSize,
		PipelineReadBufferSize:  t.PipelineReadBufferSize,
		PipelineWriteBufferSize: t.PipelineWriteBufferSize,
	}
	if o.Network == "unix" {
		// The universal options have no network: dial the socket path.
		path := o.Addrs[0]
		d := net.Dialer{Timeout: u.DialTimeout}
		if d.Timeout <= 0 {
			d.Timeout = 5 * time.Second // go-redis's default
		}
		u.Dialer = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}
	}
	return u
}

// NewClient returns the client for o: a *redis.Client for Single and
// Sentinel, a *redis.ClusterClient for Cluster. It does not connect; the
// first command does. The caller closes it.
func NewClient(o Options) redis.UniversalClient {
	return redis.NewUniversalClient(o.Universal())
}

// probeTimeout bounds each address Probe asks.
const probeTimeout = 2 * time.Second

// Probe asks each address of o, in parallel, whether it is what the URL
// says: the server answers PING; a Sentinel knows the primary by its
// master name; a seed is a cluster node. It returns nil once one
// address answers so, and otherwise an error naming every address and
// what went wrong there ("no Sentinel answered: …", "the Sentinels
// monitor no master named …"). A client built by NewClient would only
// retry its dials until the caller's deadline and say "context deadline
// exceeded".
func Probe(ctx context.Context, o Options) error {
	base := o.Universal().Simple()
	base.MaxRetries = -1
	base.DialTimeout = probeTimeout
	errs := make([]error, len(o.Addrs))
	done := make(chan struct{}, len(o.Addrs))
	for i, addr := range o.Addrs {
		go func() {
			defer func() { done <- struct{}{} }()
			ctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			errs[i] = probeOne(ctx, o, base, addr)
		}()
	}
	for range o.Addrs {
		<-done
	}
	var unknown int
	var lines []string
	for i, err := range errs {
		if err == nil {
			return nil
		}
		if errors.Is(err, redis.Nil) {
			unknown++
		}
		lines = append(lines, o.Addrs[i]+": "+err.Error())
	}
	detail := strings.Join(lines, "; ")
	switch {
	case o.Topology == Sentinel && unknown > 0:
		return fmt.Errorf("the Sentinels monitor no master named %q (%s)", o.MasterName, detail)
	case o.Topology == Sentinel:
		return fmt.Errorf("no Sentinel answered (%s)", detail)
	case o.Topology == Cluster:
		return fmt.Errorf("no cluster node answered (%s)", detail)
	}
	return fmt.Errorf("the server did not answer (%s)", detail)
}

// probeOne asks one address of o.
func probeOne(ctx context.Context, o Options, base *redis.Options, addr string) error {
	switch o.Topology {
	case Sentinel:
		// A Sentinel has no database and its own credentials (none here).
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr, TLSConfig: o.TLSConfig, MaxRetries: -1,
			DialTimeout: probeTimeout, ContextTimeoutEnabled: true})
		defer sc.Close()
		hp, err := sc.GetMasterAddrByName(ctx, o.MasterName).Result()
		if errors.Is(err, redis.Nil) {
			return fmt.Errorf("monitors no master %q: %w", o.MasterName, redis.Nil)
		}
		if err == nil && len(hp) != 2 {
			err = fmt.Errorf("unexpected answer %v", hp)
		}
		return err
	case Cluster:
		c := *base
		c.Addr, c.DB = addr, 0
		rdb := redis.NewClient(&c)
		defer rdb.Close()
		info, err := rdb.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:") {
			return errors.New("not a cluster node")
		}
		return nil
	}
	rdb := redis.NewClient(base)
	defer rdb.Close()
	return rdb.Ping(ctx).Err()
}
