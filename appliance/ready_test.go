package appliance

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
)

// TestReady_NothingServedBeforeTheMetadataCaughtUp: a node whose Raft
// store has no leader yet (as a restarted node before it hears from one)
// answers every device, push and health check with a retryable
// "starting", and its heartbeat keeps dispatch away; once its metadata
// syncs it serves.
func TestReady_NothingServedBeforeTheMetadataCaughtUp(t *testing.T) {
	if underRace {
		t.Skip("real nbio listeners trip the race detector inside nbio (see race_test.go)")
	}
	srv := streamstest.StartRedis(t)
	meta, err := raftmeta.Open(raftmeta.Config{ID: "solo", DataDir: t.TempDir(), RaftBind: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = meta.Close() })
	cfg := testConfig()
	cfg.NodeID, cfg.Apps, cfg.PushAddr = "solo", nil, "127.0.0.1:0"
	store := streams.New(srv.Client(t), streams.Config{})
	n, err := New(cfg, Deps{Store: store, Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})

	health := func() (int, string) {
		resp, err := plainHTTP.Get("http://" + n.Addrs().WS + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b struct{ Status string }
		_ = json.NewDecoder(resp.Body).Decode(&b)
		return resp.StatusCode, b.Status
	}
	if code, st := health(); code != http.StatusServiceUnavailable || st != "starting" {
		t.Fatalf("healthz before the metadata caught up: %d %q", code, st)
	}
	c := dialRaw(t, n.wsURL())
	f := hello(t, c, &wire.Hello{Device: "phone", Token: issue(t, "phone")})
	if e, ok := f.(*wire.Error); !ok || e.Code != wire.CodeUnavailable {
		t.Fatalf("HELLO to a starting node: %#v, want ERROR unavailable", f)
	}
	status, _, raw := pushJSON(t, n, map[string]any{"devices": []string{"phone"}, "data": "x"})
	if status != http.StatusServiceUnavailable {
		t.Fatalf("push to a starting node: HTTP %d %s, want 503", status, raw)
	}
	poll.Until(t, 5*time.Second, func() error {
		live, _, err := store.Nodes(context.Background())
		if err != nil || len(live) != 1 || live[0].Refusing != "starting" {
			return fmt.Errorf("heartbeats %+v (%v): want solo refusing as starting", live, err)
		}
		return nil
	})

	if err := meta.Bootstrap(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.Ready():
	case <-time.After(15 * time.Second):
		t.Fatal("not ready 15 s after its metadata had a leader")
	}
	if code, st := health(); code != http.StatusOK {
		t.Fatalf("healthz once ready: %d %q", code, st)
	}
	poll.Until(t, 5*time.Second, func() error {
		live, _, err := store.Nodes(context.Background())
		if err != nil || len(live) != 1 || live[0].Refusing != "" {
			return fmt.Errorf("heartbeats %+v (%v): want solo taking devices", live, err)
		}
		return nil
	})
}

// TestRegion_NewAppUsableAtOnceOnEveryNode: an app created through the
// leader is usable on the other nodes the moment the create answered,
// although they apply it a little later: its API key is not refused 401
// and its devices are not refused unknown_app.
func TestRegion_NewAppUsableAtOnceOnEveryNode(t *testing.T) {
	r := startRegion(t)
	li := r.leaderIndex()
	pusher, entry := r.nodes[(li+1)%3], r.nodes[(li+2)%3]
	for i := range 10 {
		id := fmt.Sprint("fresh-", i)
		code, raw := adminDo(t, r.nodes[li], http.MethodPost, "/v1/admin/apps", r.admin, map[string]any{"id": id})
		if code != http.StatusOK {
			t.Fatalf("create app: HTTP %d %s", code, raw)
		}
		var app struct {
			KeyID        string `json:"key_id"`
			SecretBase64 string `json:"secret_base64"`
			APIKey       string `json:"api_key"`
		}
		if err := json.Unmarshal(raw, &app); err != nil {
			t.Fatal(err)
		}
		// The device first, on one follower; the push on the other.
		secret, _ := base64.StdEncoding.DecodeString(app.SecretBase64)
		tok, err := token.Issue(token.Claims{App: id, Device: "phone", KeyID: app.KeyID, Expires: time.Now().Add(time.Hour).Unix()}, secret)
		if err != nil {
			t.Fatal(err)
		}
		c := dialRaw(t, entry.wsURL())
		if f := hello(t, c, &wire.Hello{App: id, Device: "phone", Token: tok}); !isWelcome(f) {
			t.Fatalf("app %s, a device on a follower right after the create: %#v", id, f)
		}
		c.Close()
		status, raw := pushWithKey(t, pusher, app.APIKey, map[string]any{"app": id, "devices": []string{"phone"}, "data": "hi"})
		if status != http.StatusOK {
			t.Fatalf("app %s, a push on a follower right after the create: HTTP %d %s", id, status, raw)
		}
	}
}

func isWelcome(f wire.Frame) bool {
	_, ok := f.(*wire.Welcome)
	return ok
}

// TestRegion_NewAdminTokenAcceptedAtOnceOnEveryNode: an admin token
// created through the leader is accepted by the other nodes the moment
// the create answered, and an unknown one is still refused 401.
func TestRegion_NewAdminTokenAcceptedAtOnceOnEveryNode(t *testing.T) {
	r := startRegion(t)
	li := r.leaderIndex()
	other := r.nodes[(li+1)%3]
	for i := range 10 {
		code, raw := adminDo(t, r.nodes[li], http.MethodPost, "/v1/admin/tokens", r.admin, map[string]any{"id": fmt.Sprint("ops-", i), "role": "viewer"})
		if code != http.StatusOK {
			t.Fatalf("create token: HTTP %d %s", code, raw)
		}
		var created struct{ Token string }
		if err := json.Unmarshal(raw, &created); err != nil {
			t.Fatal(err)
		}
		if code, raw := adminDo(t, other, http.MethodGet, "/v1/admin/degrade", created.Token, nil); code != http.StatusOK {
			t.Fatalf("token %d on a follower right after its create: HTTP %d %s", i, code, raw)
		}
	}
	if code, _ := adminDo(t, other, http.MethodGet, "/v1/admin/degrade", "no-such-token", nil); code != http.StatusUnauthorized {
		t.Fatalf("an unknown token: HTTP %d, want 401", code)
	}
}
