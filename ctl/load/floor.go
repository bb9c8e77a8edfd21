package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

const floorName = "floor"

// Events and commands of the floor scenario.
const (
	cmdRound  = "round" // parent → worker: note the CPU used so far; a round's writes come next
	evArmed   = "armed" // worker → parent: noted
	evRoundIn = "read"  // worker → parent: every pair of this worker read the round's message
)

// floorRoundTimeout bounds the wait for one round's reads.
const floorRoundTimeout = 30 * time.Second

// maxFloorPairs bounds the pairs of one floor run: the writer holds one
// end of each, and a process may open at most 20,000 files here.
const maxFloorPairs = 19000

// Floor measures what the machine itself costs for one small write to
// each of many loopback connections: the floor under any server's
// fan-out. The calling process is the writer (as a server would be): it
// accepts Pairs connections from the workers (the same worker processes
// and source addresses as a fan-out run of as many subscribers), then, in
// each round, writes one message of PayloadSize bytes to every
// connection, from one goroutine per CPU, and waits until every worker
// has read it on every connection, one read call per message, as a fan-out
// subscriber reads. The round's time is from the first write to the last
// read; the CPU is the writer's and the workers' together.
type Floor struct {
	// Pairs is the connections, 1 to 19,000.
	Pairs int `json:"pairs"`
	// Rounds is how many rounds to time; 0 means 5.
	Rounds int `json:"rounds,omitempty"`
	// PayloadSize is the bytes of one message, 8 to 4096; 0 means 64.
	PayloadSize int `json:"payload_size,omitempty"`
	// Addr is the writer's listener: set by Run for the workers.
	Addr string `json:"addr"`
}

// FloorReport is what a Floor run measured. pushctl bench floor --json
// prints it as is.
type FloorReport struct {
	Scenario string `json:"scenario"` // "floor"
	Pairs    int    `json:"pairs"`
	Workers  int    `json:"workers"`
	Rounds   int    `json:"rounds"`
	// FirstReadMS and LastReadMS are, over the rounds, the time from the
	// round's first write to the first and to the last read.
	FirstReadMS Latency `json:"first_read_ms"`
	LastReadMS  Latency `json:"last_read_ms"`
	// FloorMS is LastReadMS's p50: the floor a fan-out is held to.
	FloorMS float64 `json:"floor_ms"`
	// CPUUSPerWriteRead is the writer's and the workers' CPU over the
	// rounds, per message written and read.
	CPUUSPerWriteRead float64 `json:"cpu_us_per_write_read"`
	DurationS         float64 `json:"duration_s"`
}

func (*Floor) name() string { return floorName }

// floorRead is a worker's answer to one round.
type floorRead struct {
	Count   int   `json:"count"`
	FirstNS int64 `json:"first_ns"` // unix nanoseconds of its first read of the round
	LastNS  int64 `json:"last_ns"`  // and of its last
	CPUNS   int64 `json:"cpu_ns"`   // CPU the worker used since "round"
}

func (r *floorRead) merge(o *floorRead) {
	if r.Count == 0 || (o.Count > 0 && o.FirstNS < r.FirstNS) {
		r.FirstNS = o.FirstNS
	}
	r.LastNS = max(r.LastNS, o.LastNS)
	r.Count += o.Count
	r.CPUNS += o.CPUNS
}

// armed is a worker's answer to "round".
type armed struct{}

func (*armed) merge(*armed) {}

func (f Floor) withDefaults() (Floor, error) {
	if f.Rounds == 0 {
		f.Rounds = 5
	}
	if f.PayloadSize == 0 {
		f.PayloadSize = 64
	}
	switch {
	case f.Pairs < 1 || f.Pairs > maxFloorPairs:
		return f, planErrorf("%d pairs: 1 to %d (the writer holds one end of each, and a process may open at most 20,000 files)", f.Pairs, maxFloorPairs)
	case f.Rounds < 1:
		return f, planErrorf("%d rounds: need at least 1", f.Rounds)
	case f.PayloadSize < 8 || f.PayloadSize > 4096:
		return f, planErrorf("payload size %d: 8 to 4096", f.PayloadSize)
	}
	return f, nil
}

// Run measures the floor as p says and reports.
func (f Floor) Run(ctx context.Context, p Plan) (*FloorReport, error) {
	f, err := f.withDefaults()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	defer ln.Close()
	f.Addr = ln.Addr().String()
	accepted := make(chan []net.Conn, 1)
	go func() { accepted <- acceptN(ln, f.Pairs) }()

	pool, err := p.start(ctx, &f, f.Pairs, "pairs", "tcp://"+f.Addr, nil)
	if err != nil {
		return nil, err
	}
	defer pool.close()
	start := time.Now()
	conn, err := phase[connected](ctx, pool, cmdStart, evConnected, workerStartTimeout+time.Minute)
	if err != nil {
		return nil, err
	}
	if conn.Failed > 0 {
		return nil, fmt.Errorf("floor: %d of %d pairs did not connect: %s", conn.Failed, f.Pairs, conn.Errors)
	}
	conns := <-accepted
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	if len(conns) != f.Pairs {
		return nil, fmt.Errorf("floor: accepted %d of %d pairs", len(conns), f.Pairs)
	}
	p.progress("%d loopback pairs connected; %d rounds", f.Pairs, f.Rounds)

	rep := &FloorReport{Scenario: floorName, Pairs: f.Pairs, Workers: pool.size(), Rounds: f.Rounds}
	var first, last Histogram
	var cpu time.Duration
	msg := make([]byte, f.PayloadSize)
	for round := 1; round <= f.Rounds; round++ {
		if _, err := phase[armed](ctx, pool, cmdRound, evArmed, floorRoundTimeout); err != nil {
			return nil, err
		}
		binary.BigEndian.PutUint32(msg, uint32(round))
		cpu0 := selfCPU()
		t0 := time.Now()
		if err := writeAll(conns, msg); err != nil {
			return nil, fmt.Errorf("floor: round %d: %w", round, err)
		}
		cpu += selfCPU() - cpu0
		evs, err := pool.await(ctx, evRoundIn, floorRoundTimeout)
		if err != nil {
			return nil, fmt.Errorf("floor: round %d: %w", round, err)
		}
		var sum floorRead
		for i, ev := range evs {
			var r floorRead
			if err := jsonData(ev, &r); err != nil {
				return nil, fmt.Errorf("floor: worker %d: %w", i, err)
			}
			sum.merge(&r)
		}
		first.Record(time.Duration(sum.FirstNS - t0.UnixNano()))
		last.Record(time.Duration(sum.LastNS - t0.UnixNano()))
		cpu += time.Duration(sum.CPUNS)
		p.progress("round %d: last read %.1f ms after the first write", round, float64(sum.LastNS-t0.UnixNano())/1e6)
	}
	if _, err := phase[held](ctx, pool, cmdStop, evDone, workerStopTimeout); err != nil {
		return nil, err
	}
	rep.FirstReadMS, rep.LastReadMS = first.Latency(), last.Latency()
	rep.FloorMS = rep.LastReadMS.P50
	rep.CPUUSPerWriteRead = float64(cpu.Microseconds()) / float64(f.Pairs*f.Rounds)
	rep.DurationS = time.Since(start).Seconds()
	return rep, nil
}

// acceptN accepts n connections, or fewer when the listener closes.
func acceptN(ln net.Listener, n int) []net.Conn {
	conns := make([]net.Conn, 0, n)
	for len(conns) < n {
		c, err := ln.Accept()
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	return conns
}

// writeAll writes msg to every connection, one goroutine per CPU each
// taking its share in turn, as a server's flushers write.
func writeAll(conns []net.Conn, msg []byte) error {
	writers := min(runtime.GOMAXPROCS(0), len(conns))
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(conns); i += writers {
				if _, err := conns[i].Write(msg); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// floorWorker is a worker's side of a floor run.
type floorWorker struct {
	f     *Floor
	w     *worker
	round atomic.Int64 // the round armed
	count atomic.Int64 // reads of it
	first atomic.Int64
	last  atomic.Int64
	cpu0  atomic.Int64
	share int
}

// work dials the worker's pairs, answers "connected", then answers each
// "round" with "armed" and, once every pair read the round's message,
// "read"; at "stop" it answers "done" and closes them.
func (f *Floor) work(ctx context.Context, w *worker) error {
	fw := &floorWorker{f: f, w: w, share: w.job.Share.Count}
	d := net.Dialer{Timeout: connectTimeout, LocalAddr: w.local, Control: deferPortChoice}
	conns := make([]net.Conn, 0, fw.share)
	var mu sync.Mutex
	var fails Reasons
	sem := make(chan struct{}, connectConcurrency)
	var wg sync.WaitGroup
	for range fw.share {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := d.DialContext(ctx, "tcp", f.Addr)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fails.Add(errorReason(err), 1)
				return
			}
			conns = append(conns, c)
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	var readers sync.WaitGroup
	for _, c := range conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			fw.read(c)
		}()
	}
	if err := w.send(evConnected, connected{OK: len(conns), Failed: fw.share - len(conns), Errors: fails}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case c, ok := <-w.cmds:
			switch {
			case !ok || c == cmdStop:
				for _, c := range conns {
					_ = c.Close()
				}
				readers.Wait()
				return w.send(evDone, held{Alive: len(conns)})
			case c == cmdRound:
				fw.count.Store(0)
				fw.cpu0.Store(int64(selfCPU()))
				fw.round.Add(1)
				if err := w.send(evArmed, nil); err != nil {
					return err
				}
			}
		}
	}
}

// read reads one connection's messages, one read call each, until it
// closes.
func (fw *floorWorker) read(c net.Conn) {
	buf := make([]byte, fw.f.PayloadSize)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		at := time.Now().UnixNano()
		if int64(binary.BigEndian.Uint32(buf)) != fw.round.Load() {
			continue
		}
		casMin(&fw.first, at)
		casMax(&fw.last, at)
		if fw.count.Add(1) == int64(fw.share) {
			r := floorRead{Count: fw.share, FirstNS: fw.first.Swap(0), LastNS: fw.last.Swap(0),
				CPUNS: int64(selfCPU()) - fw.cpu0.Load()}
			_ = fw.w.send(evRoundIn, r)
		}
	}
}

// casMin lowers v to x unless it holds a lower value than x already (0
// counts as unset).
func casMin(v *atomic.Int64, x int64) {
	for {
		cur := v.Load()
		if cur != 0 && cur <= x {
			return
		}
		if v.CompareAndSwap(cur, x) {
			return
		}
	}
}

// casMax raises v to x unless it holds a higher value already.
func casMax(v *atomic.Int64, x int64) {
	for {
		cur := v.Load()
		if cur >= x || v.CompareAndSwap(cur, x) {
			return
		}
	}
}
