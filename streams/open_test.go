package streams

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// Open must answer exactly what ClaimRoute followed by Resume answers, for
// every resume verdict, in one round trip instead of two.
func TestStore_OpenMatchesClaimThenResume(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// msgs are appended to both devices by one Append each, so both
		// inboxes hold identical entries; ack is then acked on both.
		msgs, ack int
		owner     string // claims both routes first when not ""
		pos       func(epoch string) Position
		limit     int
		recovered bool
	}{
		{name: "fresh device", pos: func(string) Position { return Position{} }, recovered: true},
		{name: "fresh client", msgs: 2, pos: func(string) Position { return Position{} }, recovered: true},
		{name: "continues", msgs: 3, ack: 1, owner: "n1",
			pos: func(e string) Position { return Position{Epoch: e, Seq: 2} }, recovered: true},
		{name: "same node reconnects", msgs: 1, owner: "n2",
			pos: func(e string) Position { return Position{Epoch: e, Seq: 1} }, recovered: true},
		{name: "limit", msgs: 5, pos: func(e string) Position { return Position{Epoch: e} }, limit: 2, recovered: true},
		{name: "other epoch", msgs: 2, owner: "n1",
			pos: func(string) Position { return Position{Epoch: "stale", Seq: 1} }},
		{name: "counter went back", msgs: 2, ack: 1,
			pos: func(e string) Position { return Position{Epoch: e, Seq: 5} }},
	}
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	// Load the scripts and open the connections before counting trips.
	loadScripts(t, env.rdb)
	if _, _, _, err := env.store.Open(ctx, "warm-up", "n1", Position{}, 0); err != nil {
		t.Fatal(err)
	}
	trips := countRoundTrips(env.rdb)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			two, one := fmt.Sprintf("two-%d", i), fmt.Sprintf("open-%d", i)
			epochs := map[string]string{}
			for m := 1; m <= c.msgs; m++ {
				res, err := env.store.Append(ctx, msg(fmt.Sprintf("m-%d", m)), []string{two, one})
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range res {
					epochs[a.Device] = a.Epoch
				}
			}
			owners := map[string]uint64{}
			for _, d := range []string{two, one} {
				if c.ack > 0 {
					mustAck(t, env.store, d, epochs[d], uint64(c.ack))
				}
				if c.owner != "" {
					owners[d], _, _ = env.store.ClaimRoute(ctx, d, c.owner)
				}
			}

			trips.Store(0)
			wantEpoch, wantPrev, err := env.store.ClaimRoute(ctx, two, "n2")
			if err != nil {
				t.Fatal(err)
			}
			want, err := env.store.Resume(ctx, two, c.pos(epochs[two]), c.limit)
			if err != nil {
				t.Fatal(err)
			}
			sequential := trips.Swap(0)
			epoch, prev, got, err := env.store.Open(ctx, one, "n2", c.pos(epochs[one]), c.limit)
			if err != nil {
				t.Fatal(err)
			}
			if n := trips.Load(); n != 1 || sequential != 2 {
				t.Fatalf("Open took %d round trips, ClaimRoute+Resume %d; want 1 and 2", n, sequential)
			}

			// The devices' epochs differ (inbox epochs are random, route
			// epochs follow the clock): compare what they mean.
			if got.Recovered != c.recovered {
				t.Fatalf("Open: Recovered %v, want %v", got.Recovered, c.recovered)
			}
			if (got.Epoch == epochs[one]) != (want.Epoch == epochs[two]) || got.Epoch == "" {
				t.Fatalf("Open kept epoch %v (%s), ClaimRoute+Resume %v (%s)",
					got.Epoch == epochs[one], got.Epoch, want.Epoch == epochs[two], want.Epoch)
			}
			got.Epoch, want.Epoch = "", ""
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Open resumed %+v\nClaimRoute+Resume %+v", got, want)
			}
			if prev != (Route{Node: c.owner, Epoch: owners[one]}) || wantPrev != (Route{Node: c.owner, Epoch: owners[two]}) {
				t.Fatalf("prev: Open %+v, ClaimRoute %+v; want %s at the first claim", prev, wantPrev, c.owner)
			}
			if epoch <= prev.Epoch || wantEpoch <= wantPrev.Epoch {
				t.Fatalf("epochs: Open %d after %d, ClaimRoute %d after %d", epoch, prev.Epoch, wantEpoch, wantPrev.Epoch)
			}
			infoOne, err := env.store.Device(ctx, one)
			if err != nil {
				t.Fatal(err)
			}
			infoTwo, err := env.store.Device(ctx, two)
			if err != nil {
				t.Fatal(err)
			}
			if infoOne.Route != (Route{Node: "n2", Epoch: epoch}) || infoTwo.Route != (Route{Node: "n2", Epoch: wantEpoch}) {
				t.Fatalf("routes: Open left %+v, ClaimRoute %+v", infoOne.Route, infoTwo.Route)
			}
			if d := infoOne.RouteTTL - infoTwo.RouteTTL; d < -time.Second || d > time.Second {
				t.Fatalf("route ttls: Open %v, ClaimRoute %v", infoOne.RouteTTL, infoTwo.RouteTTL)
			}
			infoOne.Epoch, infoTwo.Epoch = "", ""
			infoOne.Route, infoTwo.Route = Route{}, Route{}
			infoOne.RouteTTL, infoTwo.RouteTTL = 0, 0
			if infoOne != infoTwo {
				t.Fatalf("inbox after Open %+v, after ClaimRoute+Resume %+v", infoOne, infoTwo)
			}
		})
	}
}

// When the claim succeeded and the resume failed, Open returns the claimed
// epoch with the error, so the caller can release the route.
func TestStore_OpenReturnsTheClaimWhenResumeFails(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	first, _, err := env.store.ClaimRoute(ctx, "a", "n1")
	if err != nil {
		t.Fatal(err)
	}
	// A meta key of the wrong type makes resume.lua fail (WRONGTYPE) while
	// claim.lua, on the route key, succeeds.
	mustDo(t, env.rdb.Set(ctx, metaKey("a"), "not a hash", 0))
	epoch, prev, res, err := env.store.Open(ctx, "a", "n2", Position{}, 10)
	if err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("open with a broken inbox: %v, want a script error", err)
	}
	if epoch <= first || prev != (Route{Node: "n1", Epoch: first}) || !reflect.DeepEqual(res, Resumed{}) {
		t.Fatalf("open with a broken inbox: epoch %d prev %+v res %+v; want the claim after %d", epoch, prev, res, first)
	}
	routes, err := env.store.Routes(ctx, []string{"a"})
	if err != nil || routes[0] != (Route{Node: "n2", Epoch: epoch}) {
		t.Fatalf("route after the failed resume: %+v %v, want n2 at %d", routes, err, epoch)
	}
	if ok, err := env.store.ReleaseRoute(ctx, "a", Route{Node: "n2", Epoch: epoch}); err != nil || !ok {
		t.Fatalf("release of the returned claim: %v %v", ok, err)
	}

	// A claim that fails returns no epoch.
	mustDo(t, env.rdb.Set(ctx, routeKey("b"), "not a hash", 0))
	epoch, prev, _, err = env.store.Open(ctx, "b", "n2", Position{}, 10)
	if err == nil || epoch != 0 || prev != (Route{}) {
		t.Fatalf("open with a broken route: %d %+v %v, want an error and no epoch", epoch, prev, err)
	}
}
