package appliance

import (
	"hash/maphash"
	"math"
	"net"
	"sync"
	"time"
)

// bucket is a token bucket: rate tokens a second, holding at most burst.
type bucket struct {
	tokens float64
	last   time.Time
}

// take removes n tokens if there are that many and otherwise reports how
// long until there will be.
func (b *bucket) take(n, rate, burst float64, now time.Time) (bool, time.Duration) {
	if b.last.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = math.Min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens >= n {
		b.tokens -= n
		return true, 0
	}
	return false, time.Duration((n - b.tokens) / rate * float64(time.Second))
}

// rateLimiter is one token bucket shared by every caller (an app's pushes).
type rateLimiter struct {
	rate, burst float64
	mu          sync.Mutex
	b           bucket
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst)}
}

// take admits n units or reports how long to wait before retrying. Callers
// refuse requests larger than the burst first: those could never pass.
func (l *rateLimiter) take(n int, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.take(float64(n), l.rate, l.burst, now)
}

// ipLimiter keeps one token bucket per source IP for new connections,
// sharded so a connect storm does not serialize on one lock. Buckets that
// have refilled are swept, so memory follows the active addresses.
type ipLimiter struct {
	rate, burst float64
	seed        maphash.Seed
	shards      [32]ipShard
}

type ipShard struct {
	mu sync.Mutex
	m  map[string]*bucket
}

func newIPLimiter(rate float64, burst int) *ipLimiter {
	l := &ipLimiter{rate: rate, burst: float64(burst), seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = map[string]*bucket{}
	}
	return l
}

// allow takes one token for the host of addr ("ip:port" or "ip").
func (l *ipLimiter) allow(addr string, now time.Time) bool {
	ip := addr
	if host, _, err := net.SplitHostPort(addr); err == nil {
		ip = host
	}
	sh := &l.shards[maphash.String(l.seed, ip)%uint64(len(l.shards))]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.m[ip]
	if b == nil {
		b = &bucket{}
		sh.m[ip] = b
	}
	ok, _ := b.take(1, l.rate, l.burst, now)
	return ok
}

// sweep drops buckets that would be full by now: forgetting them changes
// no decision.
func (l *ipLimiter) sweep(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for ip, b := range sh.m {
			if now.Sub(b.last) >= full {
				delete(sh.m, ip)
			}
		}
		sh.mu.Unlock()
	}
}

// Bounds of a logLimiter: lines a second per node and the burst; and how
// much of a device's ERROR message a line carries.
const (
	logLimitRate           = 10
	logLimitBurst          = 20
	maxLoggedDeviceMessage = 256
)

// logLimiter rate-limits one kind of warn line that devices can cause (an
// ERROR frame a device sends, a resume cursor ahead of its inbox), and
// counts the lines it holds back so that the next one logged says how
// many were. Each is worth an operator's eye, but comes from untrusted
// input or from a region-wide event: a fleet on one buggy SDK release, one
// hostile client, or every device reconnecting after Redis lost writes
// must not flood the log. The zero value is ready to use.
type logLimiter struct {
	mu         sync.Mutex
	b          bucket
	suppressed int
}

// allow reports whether a line may be logged now, and how many were held
// back since the last one.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ok, _ := l.b.take(1, logLimitRate, logLimitBurst, now); !ok {
		l.suppressed++
		return false, 0
	}
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}
