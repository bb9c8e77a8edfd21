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

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/regiontls"
)

// redisOptions is everything pushd knows about reaching the region's
// Redis. Every Redis client pushd makes is built from one, by
// newRedisClient, so the address, the ACL user and its password, and TLS
// always travel together.
type redisOptions struct {
	// URL is redis://host:port/db, or rediss:// for TLS. It must not
	// hold a password: URLs end up on command lines and in logs.
	URL string
	// User is the ACL user; "" is Redis's default user (or the URL's).
	User string
	// Password is the user's password; "" sends none.
	Password string
	// Roots returns the CAs a rediss:// server's certificate must chain
	// to, asked at every handshake; nil: the system's roots.
	Roots func() *x509.CertPool
	// ClientCert is presented when Redis asks for a client certificate
	// (its tls-auth-clients); nil: none.
	ClientCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
}

// redisOptions gathers the Redis settings: the password from its file,
// and for rediss:// the CA to trust (--redis-ca, else the region's) and
// the node's region certificate as the client certificate.
func (o *options) redisOptions(rt *regiontls.Node) (redisOptions, error) {
	ro := redisOptions{URL: o.Redis, User: o.RedisUser}
	if o.RedisPasswordFile != "" {
		pw, err := readSecretFile(o.RedisPasswordFile, "--redis-password-file")
		if err != nil {
			return ro, err
		}
		ro.Password = pw
	}
	switch {
	case o.RedisCA != "":
		b, err := os.ReadFile(o.RedisCA)
		if err != nil {
			return ro, fmt.Errorf("--redis-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return ro, fmt.Errorf("--redis-ca %s: no PEM certificate in it", o.RedisCA)
		}
		ro.Roots = func() *x509.CertPool { return pool }
	case rt != nil:
		// The bundle as it is now: a SIGHUP that added a new CA (a CA
		// rotation) lets the next Redis connection trust a Redis
		// certificate of the new CA.
		ro.Roots = rt.Roots
	}
	if rt != nil {
		ro.ClientCert = rt.ClientCertificate
	}
	return ro, nil
}

// clientOptions turns ro into go-redis options.
func (ro redisOptions) clientOptions() (*redis.Options, error) {
	opts, err := redis.ParseURL(ro.URL)
	if err != nil {
		return nil, fmt.Errorf("--redis %q: %w", ro.URL, err)
	}
	if opts.Password != "" {
		return nil, errors.New("--redis: the URL holds a password; put it in a file of mode 0600 and give --redis-password-file")
	}
	if ro.User != "" {
		opts.Username = ro.User
	}
	opts.Password = ro.Password
	if opts.TLSConfig != nil {
		opts.TLSConfig.MinVersion = tls.VersionTLS12
		opts.TLSConfig.GetClientCertificate = ro.ClientCert
		if ro.Roots != nil {
			// crypto/tls fixes RootCAs when the client is made; the
			// server's certificate is checked here instead, against the
			// roots of the moment, as crypto/tls would (chain, name,
			// server use).
			roots, name := ro.Roots, opts.TLSConfig.ServerName
			opts.TLSConfig.InsecureSkipVerify = true
			opts.TLSConfig.VerifyConnection = func(cs tls.ConnectionState) error {
				return verifyServerCertificate(cs, roots(), name)
			}
		}
	}
	// Context deadlines bound socket I/O only with this set.
	opts.ContextTimeoutEnabled = true
	return opts, nil
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

// newRedisClient is the one place pushd's Redis clients are made.
func newRedisClient(ro redisOptions) (*redis.Client, error) {
	opts, err := ro.clientOptions()
	if err != nil {
		return nil, err
	}
	return redis.NewClient(opts), nil
}

// redisCheckTimeout bounds the start's look at Redis.
const redisCheckTimeout = 5 * time.Second

// checkRedis pings Redis once at start. Refused credentials and a TLS
// handshake that fails are configuration mistakes that retrying cannot
// fix: they end the start with what to change. A Redis that does not
// answer is not: the node starts and serves live traffic until it does,
// as it does when Redis goes away later.
func checkRedis(ctx context.Context, rdb *redis.Client, ro redisOptions, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, redisCheckTimeout)
	defer cancel()
	err := rdb.Ping(ctx).Err()
	if err == nil {
		return nil
	}
	user := ro.User
	if user == "" {
		user = "default"
	}
	msg := err.Error()
	var verify *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	switch {
	case strings.HasPrefix(msg, "WRONGPASS"), strings.HasPrefix(msg, "NOAUTH"), strings.HasPrefix(msg, "NOPERM"),
		strings.Contains(msg, "AUTH") && strings.Contains(msg, "without any password configured"):
		return fmt.Errorf("redis %s refused pushd's credentials (user %q): %v: check --redis-user and --redis-password-file against the ACL of that Redis", redactedURL(ro.URL), user, err)
	case errors.As(err, &verify):
		return fmt.Errorf("redis %s: its TLS certificate is not trusted: %v: check --redis-ca (default: the region CA)", redactedURL(ro.URL), err)
	case errors.As(err, &rh):
		return fmt.Errorf("redis %s does not speak TLS on that port: %v: use redis:// or Redis's tls-port", redactedURL(ro.URL), err)
	case strings.Contains(msg, "remote error: tls:"):
		return fmt.Errorf("redis %s refused the TLS handshake: %v: Redis's tls-ca-cert-file must hold the CA of this node's certificate (the region CA) when it checks clients (tls-auth-clients)", redactedURL(ro.URL), err)
	}
	log.Warn("redis does not answer yet; serving live traffic only until it does", "redis", redactedURL(ro.URL), "err", err)
	return nil
}

// redactedURL is the URL without its user information.
func redactedURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	if _, host, ok := strings.Cut(rest, "@"); ok {
		rest = host
	}
	return scheme + "://" + rest
}
