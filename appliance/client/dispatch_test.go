package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
)

// TestClient_LostNodeIsAvoidedAtOnce: after a device's node dies, the
// next dispatch is told to avoid it and the device reconnects elsewhere
// within BackoffMin, even after attempts on the dead node have grown the
// backoff (the region takes up to its heartbeat TTL to notice a dead node,
// and dispatch names it until then unless told otherwise).
func TestClient_LostNodeIsAvoidedAtOnce(t *testing.T) {
	dead, alive := newFakeServer(t), newFakeServer(t)
	var mu sync.Mutex
	var avoids []string
	calls := 0
	cfg := testConfig(dead)
	cfg.URL = ""
	cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, time.Minute
	cfg.Dispatch = func(_ context.Context, avoid string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		avoids = append(avoids, avoid)
		if avoid == dead.url() {
			return alive.url(), nil
		}
		return dead.url(), nil
	}
	c := newClient(t, cfg)
	c.jitter = fullJitter
	run(t, c)

	sc := dead.next(t)
	sc.welcome(t, &wire.Welcome{Session: "s1", Heartbeat: 10_000, Recovered: true})
	// The node dies: its connection drops and nothing listens any more.
	_ = dead.ln.Close()
	sc.close()
	lost := time.Now()
	sc = alive.next(t)
	sc.welcome(t, &wire.Welcome{Session: "s2", Heartbeat: 10_000, Recovered: true})
	waitConnected(t, c)
	if took := time.Since(lost); took > time.Second {
		t.Fatalf("reconnected elsewhere %s after losing the node, want within BackoffMin", took)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(avoids) != 2 || avoids[0] != "" || avoids[1] != dead.url() {
		t.Fatalf("dispatch was asked to avoid %q, want [\"\" %q]", avoids, dead.url())
	}
}

// TestClient_OnlyNodeFailingBacksOff: when dispatch has no other node to
// name than the one that just failed, the client backs off as before
// rather than retrying it in a tight loop.
func TestClient_OnlyNodeFailingBacksOff(t *testing.T) {
	srv := newFakeServer(t)
	url := srv.url()
	_ = srv.ln.Close()
	var mu sync.Mutex
	var at []time.Time
	cfg := testConfig(srv)
	cfg.URL = ""
	cfg.BackoffMin, cfg.BackoffMax = 20*time.Millisecond, 2*time.Second
	cfg.Dispatch = func(context.Context, string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		at = append(at, time.Now())
		return url, nil
	}
	c := newClient(t, cfg)
	c.jitter = fullJitter
	run(t, c)
	poll.Until(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(at) < 6 {
			return fmt.Errorf("%d attempts so far", len(at))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	// Attempts 5 and 6 are at least the grown bound apart (20 ms doubling
	// to 320 ms, with the client's short jitter on top).
	if gap := at[5].Sub(at[4]); gap < 300*time.Millisecond {
		t.Fatalf("attempts on the only node %s apart: the backoff did not grow", gap)
	}
}

// TestDispatchFrom_TriesEveryBaseAndPassesAvoid: an endpoint that fails
// is skipped for the next, which is then asked first, and the URL to
// avoid goes along as avoid=.
func TestDispatchFrom_TriesEveryBaseAndPassesAvoid(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Query().Get("avoid"))
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]string{"node": "b", "ws_url": "ws://b/v1/ws", "tcp_url": "tcp://b"})
	}))
	defer good.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	dispatch := DispatchFrom([]string{bad.URL, good.URL}, "app1", "dev-1", true)
	ctx := context.Background()
	u, err := dispatch(ctx, "")
	if err != nil || u != "tcp://b" {
		t.Fatalf("dispatch = %q, %v", u, err)
	}
	bad.Close()
	if u, err = dispatch(ctx, "tcp://a"); err != nil || u != "tcp://b" {
		t.Fatalf("dispatch avoiding a = %q, %v", u, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != "" || seen[1] != "tcp://a" {
		t.Fatalf("avoid parameters %q", seen)
	}
	if _, err := DispatchFrom([]string{bad.URL}, "app1", "dev-1", false)(ctx, ""); err == nil {
		t.Fatal("dispatch with every endpoint down succeeded")
	}
}
