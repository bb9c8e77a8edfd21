package appliancetest_test

import (
	"context"
	"testing"
	"time"

	"github.com/lesismal/nbio/logging"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/appliancetest"
)

// TestNode_ShutdownRightAfterStart: a node stopped the moment it started
// (a test whose checks need no device) stops. nbio's pollers used to
// clear their stop flag when their goroutine began, so a stop that came
// first was lost: the TCP listener's accept loop spun on its closed
// listener and Shutdown waited for it for good (third_party/nbio/PUSHD.md).
// Unpatched, the first of these cycles hung.
func TestNode_ShutdownRightAfterStart(t *testing.T) {
	if appliancetest.RaceEnabled {
		t.Skip("no nbio listener under -race (see appliancetest)")
	}
	logging.SetLevel(logging.LevelNone)
	for i := range 50 {
		cfg := appliancetest.TestConfig()
		cfg.WSAddr, cfg.TCPAddr = "127.0.0.1:0", "127.0.0.1:0"
		n, err := appliance.New(cfg, appliance.Deps{})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- n.Shutdown(context.Background()) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("cycle %d: shutdown: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("cycle %d: Shutdown right after Start still running after 10 s", i)
		}
	}
}
