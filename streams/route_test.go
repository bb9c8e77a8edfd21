package streams

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestStore_ClaimRouteFencesByEpoch(t *testing.T) {
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
	env := newEnv(t, Config{RouteTTL: time.Hour})
	ctx := testCtx(t)
	ea, _, _ := env.store.ClaimRoute(ctx, "a", "n1")
	eb, _, _ := env.store.ClaimRoute(ctx, "b", "n2")
	for _, d := range []string{"a", "b"} {
		mustDo(t, env.rdb.PExpire(ctx, routeKey(d), time.Minute))
	}
	ok, err := env.store.RefreshRoutes(ctx,
		[]string{"a", "b", "c"},
		[]Route{{Node: "n1", Epoch: ea}, {Node: "n1", Epoch: eb}, {Node: "n1", Epoch: 1}})
	if err != nil || fmt.Sprint(ok) != "[true false false]" {
		t.Fatalf("refresh: %v %v, want [true false false]", ok, err)
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

func TestStore_RefreshRoutesReportsLostRoutes(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{RouteTTL: time.Hour})
	ctx := testCtx(t)
	devices := []string{"a", "b", "c"}
	routes := make([]Route, len(devices))
	for i, d := range devices {
		e, _, err := env.store.ClaimRoute(ctx, d, "n1")
		if err != nil {
			t.Fatal(err)
		}
		routes[i] = Route{Node: "n1", Epoch: e}
	}
	if ok, err := env.store.RefreshRoutes(ctx, devices, routes); err != nil || fmt.Sprint(ok) != "[true true true]" {
		t.Fatalf("refresh of owned routes: %v %v", ok, err)
	}

	// One route key lost (evicted, deleted by hand), one released.
	mustDo(t, env.rdb.Del(ctx, routeKey("b")))
	if ok, err := env.store.ReleaseRoute(ctx, "c", routes[2]); err != nil || !ok {
		t.Fatalf("release c: %v %v", ok, err)
	}
	if ok, err := env.store.RefreshRoutes(ctx, devices, routes); err != nil || fmt.Sprint(ok) != "[true false false]" {
		t.Fatalf("refresh after losing b and releasing c: %v %v, want [true false false]", ok, err)
	}

	// Redis lost everything (FLUSHALL, or a crash under appendfsync
	// everysec): every connected device's route is gone, and the refresh
	// must say so rather than pass for a renewal. It recreates nothing.
	flushAll(t, env.rdb)
	if ok, err := env.store.RefreshRoutes(ctx, devices, routes); err != nil || fmt.Sprint(ok) != "[false false false]" {
		t.Fatalf("refresh after FLUSHALL: %v %v, want all false", ok, err)
	}
	if n := dbSize(t, env.rdb); n != 0 {
		t.Fatalf("refresh after FLUSHALL wrote %d keys", n)
	}
	if ok, err := env.store.RefreshRoutes(ctx, nil, nil); err != nil || len(ok) != 0 {
		t.Fatalf("refresh of no devices: %v %v", ok, err)
	}
}

func TestStore_RefreshRoutesReportsRoutesClaimedByAnother(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{RouteTTL: time.Hour})
	ctx := testCtx(t)
	ea, _, _ := env.store.ClaimRoute(ctx, "a", "n1")
	eb, _, _ := env.store.ClaimRoute(ctx, "b", "n1")
	// a's device reconnected on n2; b's reconnected on n1 itself, under a
	// new connection epoch: either way the old connection lost its route.
	ea2, _, _ := env.store.ClaimRoute(ctx, "a", "n2")
	eb2, _, _ := env.store.ClaimRoute(ctx, "b", "n1")
	for _, d := range []string{"a", "b"} {
		mustDo(t, env.rdb.PExpire(ctx, routeKey(d), time.Minute))
	}
	old := []Route{{Node: "n1", Epoch: ea}, {Node: "n1", Epoch: eb}}
	ok, err := env.store.RefreshRoutes(ctx, []string{"a", "b"}, old)
	if err != nil || fmt.Sprint(ok) != "[false false]" {
		t.Fatalf("refresh by the old connections: %v %v, want [false false]", ok, err)
	}
	routes, err := env.store.Routes(ctx, []string{"a", "b"})
	if err != nil || routes[0] != (Route{Node: "n2", Epoch: ea2}) || routes[1] != (Route{Node: "n1", Epoch: eb2}) {
		t.Fatalf("routes after the stale refresh: %+v %v", routes, err)
	}
	for _, d := range []string{"a", "b"} {
		if ttl := env.rdb.PTTL(ctx, routeKey(d)).Val(); ttl > time.Minute {
			t.Fatalf("%s ttl %v: the stale refresh renewed the new owner's route", d, ttl)
		}
	}
}

func TestStore_ReleaseRoutesComparesEachInOneRoundTrip(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	devices := []string{"owned", "moved", "reclaimed", "released", "missing", "owned2"}
	epochs := map[string]uint64{}
	for _, d := range devices[:4] {
		epochs[d], _, _ = env.store.ClaimRoute(ctx, d, "n1")
	}
	epochs["owned2"], _, _ = env.store.ClaimRoute(ctx, "owned2", "n1")
	moved, _, _ := env.store.ClaimRoute(ctx, "moved", "n2")
	reclaimed, _, _ := env.store.ClaimRoute(ctx, "reclaimed", "n1")
	if ok, err := env.store.ReleaseRoute(ctx, "released", Route{Node: "n1", Epoch: epochs["released"]}); err != nil || !ok {
		t.Fatalf("release: %v %v", ok, err)
	}
	routes := make([]Route, len(devices))
	for i, d := range devices {
		routes[i] = Route{Node: "n1", Epoch: epochs[d]}
	}
	routes[4] = Route{Node: "n1", Epoch: 1}

	loadScripts(t, env.rdb)
	trips := countRoundTrips(env.rdb)
	ok, err := env.store.ReleaseRoutes(ctx, devices, routes)
	if err != nil || fmt.Sprint(ok) != "[true false false false false true]" {
		t.Fatalf("release routes: %v %v, want [true false false false false true]", ok, err)
	}
	if n := trips.Load(); n != 1 {
		t.Fatalf("ReleaseRoutes of %d devices took %d round trips, want 1", len(devices), n)
	}
	got, err := env.store.Routes(ctx, devices)
	if err != nil {
		t.Fatal(err)
	}
	want := []Route{
		{Epoch: epochs["owned"]},       // released; the epoch stays
		{Node: "n2", Epoch: moved},     // another node's: untouched
		{Node: "n1", Epoch: reclaimed}, // this node's newer connection: untouched
		{Epoch: epochs["released"]},    // already released
		{},                             // never claimed: not created
		{Epoch: epochs["owned2"]},      // released
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("routes after release: %+v, want %+v", got, want)
	}
	if env.rdb.Exists(ctx, routeKey("missing")).Val() != 0 {
		t.Fatal("release created a route")
	}
	// A retry releases nothing more.
	if ok, err := env.store.ReleaseRoutes(ctx, devices, routes); err != nil || fmt.Sprint(ok) != "[false false false false false false]" {
		t.Fatalf("retried release: %v %v", ok, err)
	}
	if ok, err := env.store.ReleaseRoutes(ctx, nil, nil); err != nil || len(ok) != 0 {
		t.Fatalf("release of no devices: %v %v", ok, err)
	}
}
