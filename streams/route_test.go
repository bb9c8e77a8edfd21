package streams

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestStore_ClaimRouteFencesByEpoch(t *testing.T) {
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	e1, prev, err := env.store.ClaimRoute(ctx, "dev", "n1")
	if err != nil || e1 == 0 || prev != (Route{}) {
		t.Fatalf("first claim: %d %+v %v", e1, prev, err)
	}
	e2, prev, err := env.store.ClaimRoute(ctx, "dev", "n2")
	if err != nil || e2 <= e1 || prev != (Route{Node: "n1", Epoch: e1}) {
		t.Fatalf("second claim: %d %+v %v; want > %d and prev n1", e2, prev, err, e1)
	}
	// n1 lost the route: its release is refused, the route still names n2.
	if ok, err := env.store.ReleaseRoute(ctx, "dev", Route{Node: "n1", Epoch: e1}); err != nil || ok {
		t.Fatalf("stale release: %v %v", ok, err)
	}
	if ok, err := env.store.ReleaseRoute(ctx, "dev", Route{Node: "n2", Epoch: e1}); err != nil || ok {
		t.Fatalf("release with the wrong epoch: %v %v", ok, err)
	}
	routes, err := env.store.Routes(ctx, []string{"dev", "other"})
	if err != nil || routes[0] != (Route{Node: "n2", Epoch: e2}) || routes[1] != (Route{}) {
		t.Fatalf("routes: %+v %v", routes, err)
	}
	if ok, err := env.store.ReleaseRoute(ctx, "dev", Route{Node: "n2", Epoch: e2}); err != nil || !ok {
		t.Fatalf("owner's release: %v %v", ok, err)
	}
	routes, _ = env.store.Routes(ctx, []string{"dev"})
	if routes[0].Node != "" {
		t.Fatalf("route after release: %+v", routes[0])
	}
	// The epoch survives the release: the next claim is larger still.
	e3, prev, err := env.store.ClaimRoute(ctx, "dev", "n1")
	if err != nil || e3 <= e2 || prev != (Route{Epoch: e2}) {
		t.Fatalf("claim after release: %d %+v %v; want > %d, prev offline at %d", e3, prev, err, e2, e2)
	}
	// Even after the route key is gone (expired or flushed).
	mustDo(t, env.rdb.Del(ctx, routeKey("dev")))
	e4, prev, err := env.store.ClaimRoute(ctx, "dev", "n2")
	if err != nil || e4 <= e3 || prev != (Route{}) {
		t.Fatalf("claim after the key vanished: %d %+v %v; want > %d", e4, prev, err, e3)
	}
	if ttl := env.rdb.PTTL(ctx, routeKey("dev")).Val(); ttl <= 23*time.Hour || ttl > 24*time.Hour {
		t.Fatalf("route ttl %v, want about RouteTTL 24h", ttl)
	}
	// Append reports the route it found.
	res, err := env.store.Append(ctx, msg("m"), []string{"dev"})
	if err != nil || res[0].Route != (Route{Node: "n2", Epoch: e4}) {
		t.Fatalf("append route: %+v %v", res, err)
	}
}

func TestStore_ClaimRouteRacesGetDistinctEpochs(t *testing.T) {
	env := newEnv(t, Config{})
	const racers = 8
	type claim struct {
		node  string
		epoch uint64
		prev  Route
	}
	claims := make([]claim, racers)
	var wg sync.WaitGroup
	for i := range claims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("n%d", i)
			e, prev, err := env.store.ClaimRoute(testCtx(t), "dev", node)
			if err != nil {
				t.Error(err)
			}
			claims[i] = claim{node, e, prev}
		}()
	}
	wg.Wait()
	// Serialized by the script, the claims form one chain: each saw exactly
	// the one before it, and the route names the last.
	sort.Slice(claims, func(i, j int) bool { return claims[i].epoch < claims[j].epoch })
	for i, c := range claims {
		var want Route
		if i > 0 {
			want = Route{Node: claims[i-1].node, Epoch: claims[i-1].epoch}
			if c.epoch == claims[i-1].epoch {
				t.Fatalf("two claims got epoch %d", c.epoch)
			}
		}
		if c.prev != want {
			t.Fatalf("claim %d (%s@%d) saw prev %+v, want %+v", i, c.node, c.epoch, c.prev, want)
		}
	}
	routes, err := env.store.Routes(testCtx(t), []string{"dev"})
	last := claims[racers-1]
	if err != nil || routes[0] != (Route{Node: last.node, Epoch: last.epoch}) {
		t.Fatalf("route %+v %v, want the newest claim %+v", routes, err, last)
	}
}

func TestStore_ClaimRouteRetryIsIdempotent(t *testing.T) {
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	first, _, err := env.store.ClaimRoute(ctx, "dev", "n1")
	if err != nil {
		t.Fatal(err)
	}
	// What go-redis does when the reply to a claim is lost: the same EVALSHA,
	// same token, again.
	args := []any{"n2", env.store.cfg.RouteTTL.Milliseconds(), "token-1"}
	var replies [2][]any
	for i := range replies {
		calls := []scriptCall{{script: claimScript, keys: []string{routeKey("dev")}, args: args}}
		if err := env.store.runScripts(ctx, calls); err != nil {
			t.Fatal(err)
		}
		replies[i] = calls[0].cmd.Val().([]any)
	}
	if fmt.Sprint(replies[0]) != fmt.Sprint(replies[1]) {
		t.Fatalf("retried claim answered %v, first %v", replies[1], replies[0])
	}
	if str(replies[1][1]) != "n1" || unum(replies[1][2]) != first {
		t.Fatalf("retried claim reports prev %v@%v, want n1@%d", replies[1][1], replies[1][2], first)
	}
}

func TestStore_RefreshRoutesOnlyForTheOwner(t *testing.T) {
	env := newEnv(t, Config{RouteTTL: time.Hour})
	ctx := testCtx(t)
	ea, _, _ := env.store.ClaimRoute(ctx, "a", "n1")
	eb, _, _ := env.store.ClaimRoute(ctx, "b", "n2")
	for _, d := range []string{"a", "b"} {
		mustDo(t, env.rdb.PExpire(ctx, routeKey(d), time.Minute))
	}
	err := env.store.RefreshRoutes(ctx,
		[]string{"a", "b", "c"},
		[]Route{{Node: "n1", Epoch: ea}, {Node: "n1", Epoch: eb}, {Node: "n1", Epoch: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if ttl := env.rdb.PTTL(ctx, routeKey("a")).Val(); ttl < 59*time.Minute {
		t.Fatalf("owner's route ttl %v, want refreshed to about 1h", ttl)
	}
	if ttl := env.rdb.PTTL(ctx, routeKey("b")).Val(); ttl > time.Minute {
		t.Fatalf("other owner's route ttl %v, want untouched (<= 1m)", ttl)
	}
	if env.rdb.Exists(ctx, routeKey("c")).Val() != 0 {
		t.Fatal("refresh created a route")
	}
	info, err := env.store.Device(ctx, "a")
	if err != nil || info.Route != (Route{Node: "n1", Epoch: ea}) || info.RouteTTL < 59*time.Minute {
		t.Fatalf("device a: %+v %v", info, err)
	}
}
