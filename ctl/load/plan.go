package load

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// MaxPerWorker is the most units (connections, devices) one worker
// process holds: a process here may open at most 20,000 files, and each
// unit takes one, with room left for the worker's own.
const MaxPerWorker = 15000

const (
	// workerStartTimeout bounds a worker's start up to its "ready".
	workerStartTimeout = 30 * time.Second
	// workerStopTimeout bounds the wait for a worker's answer to "stop",
	// and for its exit after its input ends; closing 15,000 connections
	// takes well under it.
	workerStopTimeout = 60 * time.Second
)

// ErrPlan is matched (errors.Is) by every error that says a Plan or a
// scenario's parameters cannot run. Such an error comes before anything
// starts; its text says which value is at fault.
var ErrPlan = errors.New("invalid load plan")

type planError struct{ msg string }

func (e *planError) Error() string        { return e.msg }
func (e *planError) Is(target error) bool { return target == ErrPlan }

func planErrorf(format string, args ...any) error {
	return &planError{msg: fmt.Sprintf(format, args...)}
}

// Plan says how a run spreads over worker processes and whom it tells
// what it is doing. What the workers do is the scenario's (Connect, Push).
// A Plan is only read: one can serve several runs at once.
type Plan struct {
	// Workers is how many workers share the run's units; 0 means one per
	// MaxPerWorker. A run never gets more workers than units.
	Workers int
	// Sources are the local IP addresses the workers bind, worker i
	// taking Sources[i%len(Sources)]. Empty means 127.0.0.2, 127.0.0.3, …,
	// one per worker, when the target is a loopback address (one source
	// address holds only as many connections to one server port as the
	// ephemeral port range has ports), and the system's choice otherwise.
	Sources []string
	// Spawn starts each worker. nil runs the workers as goroutines of the
	// calling process (InProcess(Work, nil)), where they share its
	// open-file limit; Exec starts them as processes.
	Spawn Spawner
	// Warn hears of problems that do not stop a run, such as a memory
	// measurement that failed. nil drops them.
	Warn func(error)
	// Progress hears one line for a person watching at each milestone of
	// a run ("2000/2000 connected in 0.95s; holding 12.5s"). nil drops
	// them.
	Progress func(string)
}

func (p Plan) warn(err error) {
	if p.Warn != nil {
		p.Warn(err)
	}
}

func (p Plan) progress(format string, args ...any) {
	if p.Progress != nil {
		p.Progress(fmt.Sprintf(format, args...))
	}
}

// Share is one worker's part of a run.
type Share struct {
	// First and Count are the worker's units: First to First+Count-1.
	First int `json:"first"`
	Count int `json:"count"`
	// Of is the run's units over every worker, for what a worker takes
	// its part of (a rate).
	Of int `json:"of"`
	// Source is the local IP address the worker binds; "" lets the
	// system choose.
	Source string `json:"source,omitempty"`
}

// part returns the worker's part of a quantity of the whole run.
func (s Share) part(total float64) float64 {
	if s.Of <= 0 {
		return total
	}
	return total * float64(s.Count) / float64(s.Of)
}

// split divides n units (named unit in errors: "connections") over the
// plan's workers, giving each a source address. target is the address
// the units connect to, "" for none.
func (p Plan) split(n int, unit, target string) ([]Share, error) {
	if n <= 0 {
		return nil, planErrorf("need at least one of the %s", unit)
	}
	workers := p.Workers
	if workers < 0 {
		return nil, planErrorf("%d workers: must not be negative", workers)
	}
	if workers == 0 {
		workers = (n + MaxPerWorker - 1) / MaxPerWorker
	}
	workers = min(workers, n)
	if per := (n + workers - 1) / workers; per > MaxPerWorker {
		return nil, planErrorf("%d %s over %d workers is %d per worker; a worker holds at most %d (a process may open at most 20,000 files): use more workers",
			n, unit, workers, per, MaxPerWorker)
	}
	sources := p.Sources
	for _, s := range sources {
		if net.ParseIP(s) == nil {
			return nil, planErrorf("source %q is not an IP address", s)
		}
	}
	if len(sources) == 0 && loopbackTarget(target) {
		if workers > 253 {
			return nil, planErrorf("%d workers: too many for the default loopback sources; give source addresses", workers)
		}
		for i := range workers {
			sources = append(sources, "127.0.0."+strconv.Itoa(2+i))
		}
	}
	shares := make([]Share, workers)
	perSource := map[string]int{}
	first := 0
	for i := range shares {
		count := n / workers
		if i < n%workers {
			count++
		}
		shares[i] = Share{First: first, Count: count, Of: n}
		if len(sources) > 0 {
			shares[i].Source = sources[i%len(sources)]
			perSource[shares[i].Source] += count
		}
		first += count
	}
	if ports := ephemeralPorts(); ports > 0 {
		for s, c := range perSource {
			if c > ports {
				return nil, planErrorf("source %s would hold %d connections to one server port, but the ephemeral port range has %d ports: add source addresses", s, c, ports)
			}
		}
	}
	return shares, nil
}

// loopbackTarget reports whether a URL points at an IPv4 loopback
// address, where any 127.0.0.x can be a source.
func loopbackTarget(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.To4() != nil && ip.IsLoopback()
}

// ephemeralPorts returns the size of the local port range, or 0 when it
// cannot be read (not Linux).
func ephemeralPorts() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 0
	}
	return hi - lo + 1
}
