package raftmeta

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHCLogger_FloorLevelsNamesAndStandardLogger(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
	h := newHCLogger(base, "raft", hclog.Info)

	h.Debug("hidden debug")
	h.Trace("hidden trace")
	if h.IsDebug() || !h.IsInfo() || !h.IsError() {
		t.Fatal("Is* disagree with the floor")
	}
	h.Info("shown info", "k", 1)
	h.Named("peer").Warn("shown warn")
	h.With("x", "y").Error("shown error")
	h.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}).Print("[ERR] from std\n")
	h.StandardLogger(nil).Print("[DEBUG] plain std")

	out := buf.String()
	for _, want := range []string{
		`level=INFO msg="shown info" subsystem=raft k=1`,
		`level=WARN msg="shown warn" subsystem=raft.peer`,
		`level=ERROR msg="shown error" subsystem=raft x=y`,
		`level=ERROR msg="from std"`,
		`level=INFO msg="[DEBUG] plain std"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hidden") {
		t.Errorf("below-floor message logged:\n%s", out)
	}

	// A handler above the floor still decides.
	buf.Reset()
	quiet := newHCLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), "raft", hclog.Trace)
	quiet.Info("dropped by handler")
	if quiet.IsInfo() || buf.Len() != 0 {
		t.Fatalf("handler level ignored: %q", buf.String())
	}
}
