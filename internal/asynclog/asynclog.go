// Package asynclog is a log/slog handler that never blocks the goroutine
// that logs: a record goes into a bounded queue and one writer goroutine
// formats and writes it. When the queue is full the record is dropped and
// counted, and the writer says how many it dropped once it catches up.
// Close writes what is queued and flushes; records logged after Close are
// written at once, so the last lines of a shutdown are never lost.
//
//	sink := asynclog.New(os.Stderr, asynclog.Options{JSON: true})
//	log := slog.New(sink.Handler())
//	defer sink.Close()
//
// A Sink and its handlers are safe for concurrent use.
package asynclog

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultQueue is the number of records a Sink holds before it drops.
const DefaultQueue = 8192

// Options configure a Sink. Every zero value is usable.
type Options struct {
	// Level is the lowest level written. Zero: info.
	Level slog.Leveler
	// JSON writes one JSON object per record; zero writes slog's text
	// format (key=value).
	JSON bool
	// Queue is how many records wait for the writer before new ones are
	// dropped. Zero: DefaultQueue.
	Queue int
}

// Sink owns the queue, the writer goroutine and the output.
type Sink struct {
	queue   chan entry
	dropped atomic.Uint64
	base    slog.Handler // formats into out; the writer goroutine's alone until Close

	mu     sync.Mutex // guards closed, and out after Close
	closed bool
	out    *bufio.Writer
	stop   chan struct{}
	done   chan struct{}
}

// entry is a record and the handler (with its attributes and groups) to
// format it with.
type entry struct {
	h slog.Handler
	r slog.Record
}

// New starts a sink writing to w.
func New(w io.Writer, opts Options) *Sink {
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	s := &Sink{queue: make(chan entry, opts.Queue), out: bufio.NewWriterSize(w, 64<<10),
		stop: make(chan struct{}), done: make(chan struct{})}
	ho := &slog.HandlerOptions{Level: opts.Level}
	if opts.JSON {
		s.base = slog.NewJSONHandler(s.out, ho)
	} else {
		s.base = slog.NewTextHandler(s.out, ho)
	}
	go s.run()
	return s
}

// Handler returns the handler that logs into the sink.
func (s *Sink) Handler() slog.Handler { return &handler{sink: s, inner: s.base} }

// Dropped is the number of records dropped because the queue was full.
func (s *Sink) Dropped() uint64 { return s.dropped.Load() }

// Close writes every queued record, flushes and stops the writer. Records
// logged afterwards are written synchronously. It may be called more than
// once.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	// A record queued while the writer was stopping is still queued.
	return s.writeLate()
}

// run writes queued records, flushing whenever the queue runs empty, so
// a burst costs one write to the output and a quiet log is written at
// once.
func (s *Sink) run() {
	defer close(s.done)
	var reported uint64
	for {
		select {
		case e := <-s.queue:
			_ = e.h.Handle(context.Background(), e.r)
			continue
		default:
		}
		reported = s.reportDrops(reported)
		_ = s.out.Flush()
		select {
		case e := <-s.queue:
			_ = e.h.Handle(context.Background(), e.r)
		case <-s.stop:
			for {
				select {
				case e := <-s.queue:
					_ = e.h.Handle(context.Background(), e.r)
				default:
					s.reportDrops(reported)
					return
				}
			}
		}
	}
}

// reportDrops writes one record saying how many were dropped since the
// last report, and returns the count reported so far.
func (s *Sink) reportDrops(reported uint64) uint64 {
	n := s.dropped.Load()
	if n == reported {
		return n
	}
	r := slog.NewRecord(time.Now(), slog.LevelWarn, "log records dropped: the log queue was full", 0)
	r.AddAttrs(slog.Uint64("dropped", n-reported), slog.Uint64("dropped_total", n))
	_ = s.base.Handle(context.Background(), r)
	return n
}

// handler is a slog.Handler over a Sink: Handle queues, the writer
// formats with inner.
type handler struct {
	sink  *Sink
	inner slog.Handler
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

// Handle queues a copy of r and returns at once; a full queue drops it.
// After Close it writes r itself.
func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	s := h.sink
	select {
	case s.queue <- entry{h: h.inner, r: r.Clone()}:
		// Close may have drained the queue already: if so, write what
		// was just queued here.
		select {
		case <-s.done:
			return s.writeLate()
		default:
		}
		return nil
	default:
	}
	select {
	case <-s.done:
		return s.writeNow(ctx, h.inner, r)
	default:
		s.dropped.Add(1)
		return nil
	}
}

// writeNow writes r synchronously: the sink is closed.
func (s *Sink) writeNow(ctx context.Context, h slog.Handler, r slog.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := h.Handle(ctx, r); err != nil {
		return err
	}
	return s.out.Flush()
}

// writeLate writes records queued after the writer stopped, and
// flushes.
func (s *Sink) writeLate() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		select {
		case e := <-s.queue:
			_ = e.h.Handle(context.Background(), e.r)
		default:
			return s.out.Flush()
		}
	}
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &handler{sink: h.sink, inner: h.inner.WithAttrs(attrs)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{sink: h.sink, inner: h.inner.WithGroup(name)}
}
