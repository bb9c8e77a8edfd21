package ctl

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/internal/poll"
)

// pushLoop pushes to device through h until the test ends.
func pushLoop(t *testing.T, h harness, device string) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			h.run(t, "push", "--device", device, "--data", "tick")
		}
	}()
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
	})
}

// TestTop_OnceTableAndJSON: one reading of a busy region, as a table and
// as JSON: every member, its state and role, and rates over the interval.
func TestTop_OnceTableAndJSON(t *testing.T) {
	t.Parallel()
	r, h := startAppRegion(t, 3)
	ids := []string{r.Raft.Member(0).ID, r.Raft.Member(1).ID, r.Raft.Member(2).ID}
	ackAfter(t, connectDevice(t, r.Nodes[1], "busy"), 0)
	pushLoop(t, h, "busy")

	var fr topFrame
	poll.Until(t, 20*time.Second, func() error {
		fr = decodeJSON[topFrame](t, h.run(t, "top", "--once", "--interval", "500ms", "-o", "json").expect(t, exitOK))
		if len(fr.Nodes) != 3 {
			return fmt.Errorf("%d nodes", len(fr.Nodes))
		}
		if n1 := fr.Nodes[1]; n1.Deliveries == 0 || n1.Acks == 0 || fr.Nodes[0].Pushes == 0 {
			return fmt.Errorf("no traffic seen yet: %+v", fr)
		}
		return nil
	})
	if fr.Interval != 0.5 || fr.Leader == "" || fr.Redis != "up" || fr.Degrade.Active {
		t.Fatalf("frame %+v", fr)
	}
	var leaders int
	for i, n := range fr.Nodes {
		if n.ID != ids[i] || n.State != "serving" || n.Redis != "up" {
			t.Fatalf("node %d: %+v", i, n)
		}
		if n.RaftState == "Leader" {
			leaders++
		}
	}
	// The test cluster's fast Raft timings may hold an election on a
	// busy machine: never two leaders, though.
	if leaders > 1 {
		t.Fatalf("%d leaders: %+v", leaders, fr.Nodes)
	}
	if fr.Nodes[1].Connections != 1 || fr.Region.Connections != 1 {
		t.Fatalf("connections %+v, region %+v", fr.Nodes[1], fr.Region)
	}
	if fr.Region.Pushes != fr.Nodes[0].Pushes+fr.Nodes[1].Pushes+fr.Nodes[2].Pushes {
		t.Fatalf("region pushes %.1f is not the sum of %+v", fr.Region.Pushes, fr.Nodes)
	}

	out := h.run(t, "top", "--once", "--interval", "300ms").expect(t, exitOK).stdout
	first, table, _ := strings.Cut(out, "\n\n")
	// The leader may change under the fast test timings of a busy machine.
	if !regexp.MustCompile(`^region: leader \S+, redis up, degrade off; \S+, rates over 300ms$`).MatchString(first) {
		t.Fatalf("first line %q", first)
	}
	rows := tableRows(table)
	if got := strings.Join(rows[0], " "); got != "NODE STATE RAFT REDIS CONNS HANDSHAKES/S PUSHES/S DELIVERIES/S ACKS/S RETRANSMITS/S SLOW_CUTS/S" {
		t.Fatalf("header %q", got)
	}
	if len(rows) != 5 || rows[4][0] != "REGION" {
		t.Fatalf("rows %q", rows)
	}
	for i, id := range ids {
		if rows[i+1][0] != id || rows[i+1][1] != "serving" || len(rows[i+1]) != 11 {
			t.Fatalf("row %q", rows[i+1])
		}
	}
	if rows[2][4] != "1" {
		t.Fatalf("%s connections %q", ids[1], rows[2][4])
	}
}

// TestTop_WatchesUntilStopped: without --once, top prints a reading
// every interval (one JSON line each) until interrupted, which exits 0.
func TestTop_WatchesUntilStopped(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 1)
	stdout, _, stop, _ := r.as(0, r.Viewer).start(t, "top", "--interval", "200ms", "--json")
	poll.Until(t, 10*time.Second, func() error {
		if n := strings.Count(stdout.String(), "\n"); n < 3 {
			return fmt.Errorf("%d readings", n)
		}
		return nil
	})
	res := stop()
	if res.code != exitOK {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	for _, line := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		fr := decodeJSON[topFrame](t, result{stdout: line})
		if len(fr.Nodes) != 1 || fr.Nodes[0].State != "serving" {
			t.Fatalf("reading %+v", fr)
		}
	}
}

func TestTop_DownNodeAndUsage(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 3)
	h := r.as(0, r.Viewer)
	r.Kill(t, 2)
	var fr topFrame
	poll.Until(t, 10*time.Second, func() error {
		fr = decodeJSON[topFrame](t, h.run(t, "top", "--once", "--interval", "100ms", "-o", "json").expect(t, exitOK))
		if fr.Nodes[2].State != "down" {
			return fmt.Errorf("node 2 %+v", fr.Nodes[2])
		}
		return nil
	})
	if n := fr.Nodes[2]; n.RaftState != "" || n.Connections != 0 {
		t.Fatalf("down node %+v", n)
	}
	out := h.run(t, "top", "--once", "--interval", "100ms").expect(t, exitOK).stdout
	if err := contains(out, r.Raft.Member(2).ID+"   down "); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"top", "--interval", "10ms"}, {"top", "extra"}, {"top", "--interval", "soon"}} {
		if res := h.run(t, args...).expect(t, exitUsage); res.stdout != "" {
			t.Fatalf("%q wrote %q", args, res.stdout)
		}
	}
	// Without a token the region refuses: exit 1, said on stderr.
	res := r.as(0, "").run(t, "top", "--once").expect(t, exitFailure)
	if err := contains(res.stderr, "admin token missing or unknown"); err != nil {
		t.Fatal(err)
	}
}

// TestTop_Rates: rates use each node's clock between its two readings,
// and a node that restarted in between counts from zero.
func TestTop_Rates(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := api.NodeCounters{Time: t0, Pushes: 100, Acks: 10}
	c := api.NodeCounters{Time: t0.Add(2 * time.Second), Pushes: 300, Acks: 50, Retransmits: 4}
	got := rates(p, c, 7, time.Second)
	if got.Pushes != 100 || got.Acks != 20 || got.Retransmits != 2 || got.Connections != 7 {
		t.Fatalf("rates %+v", got)
	}
	restarted := api.NodeCounters{Time: t0.Add(time.Second), Pushes: 30}
	if got := rates(p, restarted, 0, 2*time.Second); got.Pushes != 15 {
		t.Fatalf("after a restart %+v", got)
	}
}
