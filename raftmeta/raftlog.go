package raftmeta

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogger adapts the injected slog.Logger to the hclog.Logger that raft,
// its transport, its snapshot store and raft-wal take. Messages below
// floor are dropped before they reach slog: raft's DEBUG and TRACE output
// (every RPC, every heartbeat failure retry) would otherwise swamp a
// handler configured at debug level for pushd's own messages.
type hclogger struct {
	base  *slog.Logger // with the implied args, without the name
	l     *slog.Logger // base plus the "subsystem" name
	name  string
	floor hclog.Level
	args  []any
}

func newHCLogger(l *slog.Logger, name string, floor hclog.Level) *hclogger {
	return &hclogger{base: l, l: l.With("subsystem", name), name: name, floor: floor}
}

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (h *hclogger) enabled(level hclog.Level) bool {
	if level == hclog.Off || level < h.floor {
		return false
	}
	return h.l.Enabled(context.Background(), slogLevel(level))
}

func (h *hclogger) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	if !h.enabled(level) {
		return
	}
	h.l.Log(context.Background(), slogLevel(level), msg, args...)
}

func (h *hclogger) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogger) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogger) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogger) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogger) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogger) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hclogger) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hclogger) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hclogger) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hclogger) IsError() bool { return h.enabled(hclog.Error) }

func (h *hclogger) ImpliedArgs() []any { return h.args }

func (h *hclogger) With(args ...any) hclog.Logger {
	c := *h
	c.base = h.base.With(args...)
	c.l = h.l.With(args...)
	c.args = append(append([]any(nil), h.args...), args...)
	return &c
}

func (h *hclogger) Name() string { return h.name }

func (h *hclogger) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return h.ResetNamed(name)
}

func (h *hclogger) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	c.l = h.base.With("subsystem", name)
	return &c
}

// SetLevel moves the floor; raft never calls it, hclog requires it.
func (h *hclogger) SetLevel(level hclog.Level) { h.floor = level }

func (h *hclogger) GetLevel() hclog.Level { return h.floor }

func (h *hclogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *hclogger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	w := &stdWriter{h: h, level: hclog.Info}
	if opts != nil {
		w.infer = opts.InferLevels
		if opts.ForceLevel != hclog.NoLevel {
			w.level = opts.ForceLevel
		}
	}
	return w
}

// stdWriter turns standard-library log lines into hclogger messages,
// optionally reading the level from a "[WARN]"-style prefix.
type stdWriter struct {
	h     *hclogger
	level hclog.Level
	infer bool
}

func (w *stdWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(string(bytes.TrimRight(p, "\n")), "\n") {
		level := w.level
		if w.infer {
			level, line = inferLevel(line, level)
		}
		w.h.Log(level, line)
	}
	return len(p), nil
}

func inferLevel(line string, def hclog.Level) (hclog.Level, string) {
	for prefix, level := range map[string]hclog.Level{
		"[TRACE]": hclog.Trace, "[DEBUG]": hclog.Debug, "[INFO]": hclog.Info,
		"[WARN]": hclog.Warn, "[ERR]": hclog.Error, "[ERROR]": hclog.Error,
	} {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return level, strings.TrimSpace(rest)
		}
	}
	return def, line
}
