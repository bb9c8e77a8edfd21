package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/pushd/pushd/regiontls"
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

// credentials completes r with pushd's own credentials: the ACL user
// (--redis-user) and its password, read from --redis-password-file
// rather than given on a command line; and for rediss:// the CAs Redis's
// certificate must chain to (--redis-ca, else the region's bundle as it
// is at each new connection, else the system's) and the node's region
// certificate, presented when Redis asks for one (tls-auth-clients).
func (r *redisSetup) credentials(o *options, rt *regiontls.Node) error {
	if o.RedisUser != "" {
		r.url.Username = o.RedisUser
	}
	if o.RedisPasswordFile != "" {
		if r.url.Password != "" {
			return errors.New("--redis holds a password and --redis-password-file gives one too: keep the file, and the URL without it")
		}
		pw, err := readSecretFile(o.RedisPasswordFile, "--redis-password-file")
		if err != nil {
			return err
		}
		r.url.Password = pw
	}
	var roots func() *x509.CertPool
	switch {
	case o.RedisCA != "":
		b, err := os.ReadFile(o.RedisCA)
		if err != nil {
			return fmt.Errorf("--redis-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("--redis-ca %s: no PEM certificate in it", o.RedisCA)
		}
		roots = func() *x509.CertPool { return pool }
	case rt != nil:
		// The bundle as it is now: a SIGHUP that added a new CA (a CA
		// rotation) lets the next Redis connection trust a Redis
		// certificate of the new CA.
		roots = rt.Roots
	}
	if r.url.TLSConfig == nil {
		return nil
	}
	cfg := r.url.TLSConfig.Clone()
	cfg.MinVersion = tls.VersionTLS12
	if rt != nil {
		cfg.GetClientCertificate = rt.ClientCertificate
	}
	switch {
	case roots == nil:
	case cfg.ServerName == "":
		cfg.RootCAs = roots()
	default:
		// crypto/tls fixes RootCAs when the client is made; the server's
		// certificate is checked here instead, against the roots of the
		// moment, as crypto/tls would (chain, name, server use).
		name := cfg.ServerName
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyServerCertificate(cs, roots(), name)
		}
	}
	r.url.TLSConfig = cfg
	return nil
}

// verifyServerCertificate checks a server's certificate chain against
// roots and name, and fails as crypto/tls's own check does.
func verifyServerCertificate(cs tls.ConnectionState, roots *x509.CertPool, name string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the server presented no certificate")
	}
	intermediates := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, DNSName: name})
	if err != nil {
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return nil
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
		return redisStartError(r, err)
	}
	top, err := store.Topology(ctx)
	if err != nil {
		return redisStartError(r, err)
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

// redisStartError says what to check when Redis could not be used at
// start: refused credentials and TLS handshakes that fail are named as
// such (the errors come through Probe's summary of every address, so
// they are told apart by Redis's and crypto/tls's words).
func redisStartError(r redisSetup, err error) error {
	user := r.url.Username
	if user == "" {
		user = "default"
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "NOAUTH"), strings.Contains(msg, "NOPERM"),
		strings.Contains(msg, "AUTH") && strings.Contains(msg, "without any password configured"):
		return fmt.Errorf("redis %s refused pushd's credentials (user %q): %w: check --redis-user and --redis-password-file against the ACL of that Redis", r.url, user, err)
	case strings.Contains(msg, "tls: failed to verify certificate"):
		return fmt.Errorf("redis %s: its TLS certificate is not trusted: %w: check --redis-ca (default: the region CA)", r.url, err)
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return fmt.Errorf("redis %s does not speak TLS on that port: %w: use redis:// or Redis's tls-port", r.url, err)
	case strings.Contains(msg, "remote error: tls:"):
		return fmt.Errorf("redis %s refused the TLS handshake: %w: Redis's tls-ca-cert-file must hold the CA of this node's certificate (the region CA) when it checks clients (tls-auth-clients)", r.url, err)
	}
	return fmt.Errorf("--redis %s: cannot reach Redis: %w", r.url, err)
}
