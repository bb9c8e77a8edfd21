package load

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/appliance/wire"
)

// A fan-out worker holds its subscribers on raw sockets and reads them as
// cheaply as a floor worker reads its pairs, one read call per socket
// wake-up, decoding only what it needs in place (the WebSocket header, the
// frame headers, a PUSH's payload): its own cost shows in the floor ratio.

// fanoutWorker is a worker's side of a fan-out run.
type fanoutWorker struct {
	f       *Fanout
	w       *worker
	tallies []workerTally // by push
	share   int

	// held is len(subs) once connectAll returned, before any push: what
	// received compares each push's count with, on every delivery.
	held atomic.Int64

	mu       sync.Mutex
	subs     []*subscriber
	failed   int
	fails    Reasons
	drops    int
	dropped  Reasons
	stopping atomic.Bool
	readers  sync.WaitGroup
}

// workerTally is one push as this worker's subscribers saw it.
type workerTally struct {
	count, first, last atomic.Int64
}

// subscriber is one subscriber's socket and what it received.
type subscriber struct {
	c    net.Conn
	ws   bool
	buf  []byte // read buffer: buf[:n] holds what is not decoded yet
	n    int
	seen []uint64 // pushes received, a bit each
	dups int
	dead atomic.Bool
}

// work connects the worker's subscribers, answers "connected", streams a
// tally for each push all of them got, and at "stop" answers "done" with
// the rest.
func (f *Fanout) work(ctx context.Context, w *worker) error {
	fw := &fanoutWorker{f: f, w: w, tallies: make([]workerTally, f.maxPushes()), share: w.job.Share.Count}
	fw.connectAll(ctx)
	fw.mu.Lock()
	ev := connected{OK: len(fw.subs), Failed: fw.failed, Errors: maps.Clone(fw.fails)}
	fw.mu.Unlock()
	fw.held.Store(int64(ev.OK))
	pingStop := make(chan struct{})
	var pinger sync.WaitGroup
	pinger.Add(1)
	go func() {
		defer pinger.Done()
		fw.ping(pingStop)
	}()
	defer func() {
		close(pingStop)
		pinger.Wait()
	}()
	if err := w.send(evConnected, ev); err != nil {
		fw.closeAll()
		return err
	}
	w.waitStop(ctx)
	fw.closeAll()
	done := fanoutDone{held: held{Alive: ev.OK}}
	fw.mu.Lock()
	done.Drops, done.Errors = fw.drops, maps.Clone(fw.dropped)
	for _, s := range fw.subs {
		done.Duplicates += s.dups
	}
	fw.mu.Unlock()
	for k := range fw.tallies {
		t := &fw.tallies[k]
		if c := t.count.Load(); c > 0 && c < int64(ev.OK) {
			done.Partial = append(done.Partial, pushTally{Push: k, Count: int(c), FirstNS: t.first.Load(), LastNS: t.last.Load()})
		}
	}
	return w.send(evDone, done)
}

func (fw *fanoutWorker) connectAll(ctx context.Context) {
	sem := make(chan struct{}, connectConcurrency)
	var wg sync.WaitGroup
	for i := range fw.share {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			fw.fail("not attempted (stopped)", fw.share-i)
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			device := fw.f.Target.device(fw.w.job.Share.First + i)
			s, err := dialSubscriber(ctx, fw.f.Target, device, fw.w.local)
			if err != nil {
				fw.fail(errorReason(err), 1)
				return
			}
			s.seen = make([]uint64, (len(fw.tallies)+63)/64)
			fw.mu.Lock()
			fw.subs = append(fw.subs, s)
			fw.mu.Unlock()
			fw.readers.Add(1)
			go fw.read(s)
		}()
	}
	wg.Wait()
}

func (fw *fanoutWorker) fail(reason string, n int) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.failed += n
	fw.fails.Add(reason, n)
}

// read decodes a subscriber's frames until its socket closes.
func (fw *fanoutWorker) read(s *subscriber) {
	defer fw.readers.Done()
	for {
		if s.n == len(s.buf) {
			s.buf = append(s.buf, make([]byte, len(s.buf))...)
		}
		k, err := s.c.Read(s.buf[s.n:])
		if err != nil {
			fw.drop(s, errorReason(err))
			return
		}
		at := time.Now().UnixNano()
		s.n += k
		used, err := s.decode(func(frame []byte) error { return fw.onFrame(s, frame, at) })
		if err != nil {
			fw.drop(s, err.Error())
			return
		}
		copy(s.buf, s.buf[used:s.n])
		s.n -= used
	}
}

// onFrame handles one pushd frame: a PUSH is counted, a BATCH unwrapped,
// anything that ends the session ends it, the rest (PONG, CONTROL
// degraded) is let be.
func (fw *fanoutWorker) onFrame(s *subscriber, frame []byte, at int64) error {
	h, err := wire.ParseHeader(frame, len(frame))
	if err != nil {
		return fmt.Errorf("frame: %w", err)
	}
	body := frame[wire.HeaderLen : wire.HeaderLen+h.Length]
	switch h.Type {
	case wire.TypeBatch:
		if h.Flags&wire.FlagLZ4 != 0 {
			return errors.New("an lz4 BATCH, which the subscriber did not offer to read")
		}
		for len(body) > 0 {
			ih, err := wire.ParseHeader(body, len(body))
			if err != nil || wire.HeaderLen+ih.Length > len(body) {
				return fmt.Errorf("BATCH holds a bad frame: %v", err)
			}
			if err := fw.onFrame(s, body[:wire.HeaderLen+ih.Length], at); err != nil {
				return err
			}
			body = body[wire.HeaderLen+ih.Length:]
		}
	case wire.TypePush:
		fw.received(s, pushIndex(body), at)
	case wire.TypeError:
		return errors.New("ERROR from the server")
	case wire.TypeControl:
		if len(body) > 0 {
			switch k := wire.ControlKind(body[0]); k {
			case wire.ControlDegraded, wire.ControlRestored:
			default:
				return errors.New("control " + k.String())
			}
		}
	}
	return nil
}

// pushIndex reads the push number from a PUSH body's payload ("k|…"),
// walking the fields in place; -1 when it is not one of the run's.
func pushIndex(body []byte) int {
	var ok bool
	uvarint := func() uint64 {
		v, n := binary.Uvarint(body)
		if n <= 0 {
			ok = false
			return 0
		}
		body = body[n:]
		return v
	}
	skip := func(n uint64) {
		if n > uint64(len(body)) {
			ok = false
			n = uint64(len(body))
		}
		body = body[n:]
	}
	ok = true
	uvarint()         // seq
	skip(uvarint())   // id
	skip(uvarint())   // business
	skip(1)           // priority
	uvarint()         // created
	skip(uvarint())   // group
	size := uvarint() // payload
	if !ok || size > uint64(len(body)) {
		return -1
	}
	k := 0
	for i, c := range body[:size] {
		switch {
		case c == '|' && i > 0:
			return k
		case c < '0' || c > '9' || i > 9:
			return -1
		}
		k = 10*k + int(c-'0')
	}
	return -1
}

// received counts push k's arrival at s, and streams the push's tally
// once every subscriber of this worker has it.
func (fw *fanoutWorker) received(s *subscriber, k int, at int64) {
	if k < 0 || k >= len(fw.tallies) {
		return
	}
	if s.seen[k/64]&(1<<(k%64)) != 0 {
		s.dups++
		return
	}
	s.seen[k/64] |= 1 << (k % 64)
	t := &fw.tallies[k]
	casMin(&t.first, at)
	casMax(&t.last, at)
	if t.count.Add(1) == fw.held.Load() {
		_ = fw.w.send(evData, []pushTally{{Push: k, Count: int(t.count.Load()), FirstNS: t.first.Load(), LastNS: t.last.Load()}})
	}
}

func (fw *fanoutWorker) drop(s *subscriber, reason string) {
	if !s.dead.CompareAndSwap(false, true) {
		return
	}
	_ = s.c.Close()
	if fw.stopping.Load() {
		return
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.drops++
	fw.dropped.Add(reason, 1)
}

// ping sends each subscriber a PING per heartbeat interval, a tenth of
// them per tenth of it, so the server's idle reaper leaves them be.
func (fw *fanoutWorker) ping(stop <-chan struct{}) {
	const hb = 5 * time.Second
	t := time.NewTicker(hb / pingSlots)
	defer t.Stop()
	for k := 0; ; k++ {
		select {
		case <-stop:
			return
		case now := <-t.C:
			fw.mu.Lock()
			subs := fw.subs
			fw.mu.Unlock()
			ping := wire.Append(nil, &wire.Ping{Time: uint64(now.UnixMilli())})
			for i := k % pingSlots; i < len(subs); i += pingSlots {
				if s := subs[i]; !s.dead.Load() {
					_ = s.send(ping)
				}
			}
		}
	}
}

func (fw *fanoutWorker) closeAll() {
	fw.stopping.Store(true)
	fw.mu.Lock()
	subs := fw.subs
	fw.mu.Unlock()
	for _, s := range subs {
		if s.dead.CompareAndSwap(false, true) {
			_ = s.c.Close()
		}
	}
	fw.readers.Wait()
}

// dialSubscriber opens one subscriber's session: the socket from local,
// the WebSocket upgrade for a ws:// target, HELLO with a fresh token, and
// WELCOME.
func dialSubscriber(ctx context.Context, t Target, device string, local net.Addr) (*subscriber, error) {
	u, err := url.Parse(t.URL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" && u.Scheme != "tcp" {
		return nil, fmt.Errorf("subscribers speak ws:// or tcp://, not %s://", u.Scheme)
	}
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	d := net.Dialer{LocalAddr: local, Control: deferPortChoice}
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	s := &subscriber{c: c, ws: u.Scheme == "ws", buf: make([]byte, 512)}
	if err := s.open(t, device, u); err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return s, nil
}

func (s *subscriber) open(t Target, device string, u *url.URL) error {
	if s.ws {
		var key [16]byte
		_, _ = rand.Read(key[:])
		req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]) + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
		if _, err := io.WriteString(s.c, req); err != nil {
			return err
		}
		br := bufio.NewReaderSize(s.c, 512)
		status, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("websocket upgrade: %w", err)
		}
		if !strings.HasPrefix(status, "HTTP/1.1 101") {
			return fmt.Errorf("websocket upgrade refused: %s", strings.TrimSpace(status))
		}
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return fmt.Errorf("websocket upgrade: %w", err)
			}
			if line == "\r\n" {
				break
			}
		}
		// What the server sent after the upgrade is the first frames.
		s.n = copy(s.buf, mustPeek(br, br.Buffered()))
	}
	tok, err := t.mint(device)
	if err != nil {
		return err
	}
	if err := s.send(wire.Append(nil, &wire.Hello{Token: tok, App: t.App, Device: device, Platform: "bench", Version: "pushctl"})); err != nil {
		return err
	}
	for {
		var welcome error
		got := false
		used, err := s.decode(func(frame []byte) error {
			if got {
				return nil
			}
			got = true
			f, _, err := wire.Decode(frame, len(frame))
			switch f := f.(type) {
			case *wire.Welcome:
			case *wire.Batch:
				welcome = f.Each(len(frame), func(inner wire.Frame) error {
					if _, ok := inner.(*wire.Welcome); !ok {
						return fmt.Errorf("answer to HELLO: %s", inner.Type())
					}
					return errStopEach
				})
				if errors.Is(welcome, errStopEach) {
					welcome = nil
				}
			case *wire.Error:
				welcome = fmt.Errorf("refused: %s", f.Code)
			default:
				if err != nil {
					welcome = err
				} else {
					welcome = fmt.Errorf("answer to HELLO: %s", f.Type())
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		copy(s.buf, s.buf[used:s.n])
		s.n -= used
		if got {
			return welcome
		}
		k, err := s.c.Read(s.buf[s.n:])
		if err != nil {
			return fmt.Errorf("awaiting WELCOME: %w", err)
		}
		s.n += k
	}
}

// errStopEach ends a walk through a BATCH early.
var errStopEach = errors.New("stop")

func mustPeek(br *bufio.Reader, n int) []byte {
	b, _ := br.Peek(n)
	return b
}

// decode hands fn each complete pushd frame in buf[:n] (for WebSocket,
// each binary message's payload) and returns the bytes it used.
func (s *subscriber) decode(fn func(frame []byte) error) (int, error) {
	b := s.buf[:s.n]
	used := 0
	for {
		rest := b[used:]
		if !s.ws {
			if len(rest) < wire.HeaderLen {
				return used, nil
			}
			size := wire.HeaderLen + int(binary.BigEndian.Uint32(rest[3:wire.HeaderLen]))
			if size > len(rest) {
				s.need(used, size)
				return used, nil
			}
			if err := fn(rest[:size]); err != nil {
				return used, err
			}
			used += size
			continue
		}
		if len(rest) < 2 {
			return used, nil
		}
		op, size, head := rest[0]&0x0F, int(rest[1]&0x7F), 2
		switch size {
		case 126:
			if len(rest) < 4 {
				return used, nil
			}
			size, head = int(binary.BigEndian.Uint16(rest[2:4])), 4
		case 127:
			if len(rest) < 10 {
				return used, nil
			}
			size, head = int(binary.BigEndian.Uint64(rest[2:10])), 10
		}
		if head+size > len(rest) {
			s.need(used, head+size)
			return used, nil
		}
		switch op {
		case 0x2: // binary
			if err := fn(rest[head : head+size]); err != nil {
				return used, err
			}
		case 0x8: // close
			return used, errors.New("closed by the server")
		}
		used += head + size
	}
}

// need grows the buffer so a message of size bytes at from fits.
func (s *subscriber) need(from, size int) {
	if size > len(s.buf)-from && size > len(s.buf)/2 {
		s.buf = append(s.buf, make([]byte, size)...)
	}
}

// send writes one frame: a masked WebSocket message, or the frame itself
// on TCP.
func (s *subscriber) send(frame []byte) error {
	if !s.ws {
		_, err := s.c.Write(frame)
		return err
	}
	msg := make([]byte, 0, 14+len(frame))
	msg = append(msg, 0x82)
	switch n := len(frame); {
	case n < 126:
		msg = append(msg, 0x80|byte(n))
	case n <= 0xFFFF:
		msg = append(msg, 0x80|126)
		msg = binary.BigEndian.AppendUint16(msg, uint16(n))
	default:
		msg = append(msg, 0x80|127)
		msg = binary.BigEndian.AppendUint64(msg, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	msg = append(msg, mask[:]...)
	start := len(msg)
	msg = append(msg, frame...)
	for i := range frame {
		msg[start+i] ^= mask[i&3]
	}
	_, err := s.c.Write(msg)
	return err
}
