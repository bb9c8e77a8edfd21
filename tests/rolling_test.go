package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
)

// pushdDrainSpread is pushd's default --drain-spread, which the rolling
// restart below runs with.
const pushdDrainSpread = 5 * time.Second

// pushctlAt runs the tests' pushctl against n's admin API with tok and
// returns its stdout.
func pushctlAt(t *testing.T, n *node, tok string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "pushctl"), args...)
	cmd.Env = append(os.Environ(), "PUSHD_ADMIN_URL="+n.adminURL(), "PUSHD_ADMIN_TOKEN="+tok, "XDG_CONFIG_HOME="+t.TempDir())
	if !n.plaintext() {
		cmd.Env = append(cmd.Env, "PUSHD_CA_FILE="+n.caFile())
	}
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("pushctl %v: %v\n%s%s", args, err, out, stderr)
	}
	return out
}

// peakPerSecond is the most of times (sorted) within any one second.
func peakPerSecond(times []time.Time) int {
	peak := 0
	for i := range times {
		j := i
		for j < len(times) && times[j].Sub(times[i]) < time.Second {
			j++
		}
		peak = max(peak, j-i)
	}
	return peak
}

// TestRegion_RollingRestart: a region of three pushd processes holds
// 1,000 SDK devices while a business server pushes to them without a
// pause; every node in turn, in the order pushctl nodes restart-plan
// gives (followers, then the leader), gets SIGTERM, exits, starts again
// and is waited for with pushctl nodes wait before the next. Every push
// answered stored reaches its device exactly once, in order, after the
// SDK's dedupe; each drain's peak of reconnects per second (devices
// starting to connect again: their dispatch calls) stays within twice
// the rate its pacing aims at (the node's devices over --drain-spread),
// and each node exits well before the unit's TimeoutStopSec. The peak of
// sessions opened (WELCOMEs) is reported too: it also depends on how
// fast the other nodes complete handshakes, which on a loaded machine
// stall and then catch up in bursts.
func TestRegion_RollingRestart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("restarts three pushd processes holding 1,000 devices")
	}
	const devices = 1000
	nodes, tok, redisURL := startRegion(t)
	app := createApp(t, nodes[0], tok, "rolling")
	f := startFleet(t, app, nodes, "dev", devices)
	f.waitConnected(t, 90*time.Second)
	p := newPusher(t, app, nodes)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var pushErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		ids := f.ids()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			batch := make([]string, 0, 20)
			for i := 0; i < 20; i++ {
				batch = append(batch, ids[(k*20+i)%len(ids)])
			}
			if err := p.push(batch); err != nil {
				pushErr = err
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	var plan struct {
		Leader string
		Steps  []struct{ Node string }
	}
	if err := json.Unmarshal(pushctlAt(t, nodes[0], tok, "nodes", "restart-plan", "-o", "json"), &plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.Steps) != 3 || plan.Steps[2].Node != plan.Leader {
		t.Fatalf("plan %+v", plan)
	}
	type drain struct {
		node          string
		devices       int
		start, exited time.Time
	}
	var drains []drain
	for _, step := range plan.Steps {
		i := slices.IndexFunc(nodes, func(n *node) bool { return n.id == step.Node })
		victim, asker := nodes[i], nodes[(i+1)%len(nodes)]
		d := drain{node: victim.id, devices: connectionsPerNode(t, asker, tok)[victim.id], start: time.Now()}
		victim.stop(syscall.SIGTERM)
		d.exited = time.Now()
		if st := victim.cmd.ProcessState; !st.Success() {
			t.Fatalf("%s exited with %v after SIGTERM\n%s", victim.id, st, victim.logs)
		}
		drains = append(drains, d)
		victim.start(t, redisURL)
		pushctlAt(t, asker, tok, "nodes", "wait", victim.id, "--timeout", "60s")
		f.waitConnected(t, 60*time.Second)
	}
	close(stop)
	wg.Wait()
	if pushErr != nil {
		t.Fatal(pushErr)
	}
	poll.Until(t, 60*time.Second, func() error { return p.delivered(f) })
	stored := 0
	p.mu.Lock()
	for _, msgs := range p.stored {
		stored += len(msgs)
	}
	p.mu.Unlock()

	var attempts, welcomes []time.Time
	for _, d := range f.devices {
		d.mu.Lock()
		attempts = append(attempts, d.attempts...)
		welcomes = append(welcomes, d.welcomes...)
		d.mu.Unlock()
	}
	for _, times := range [][]time.Time{attempts, welcomes} {
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	}
	for _, d := range drains {
		// Reconnects caused by this drain: from SIGTERM until the SDK's
		// wait after CONTROL drain (up to 3 s) is over for the last one.
		during := func(times []time.Time) []time.Time {
			var in []time.Time
			for _, at := range times {
				if !at.Before(d.start) && at.Before(d.exited.Add(4*time.Second)) {
					in = append(in, at)
				}
			}
			return in
		}
		reconnects, opened := during(attempts), during(welcomes)
		paced := float64(d.devices) / pushdDrainSpread.Seconds()
		peak := peakPerSecond(reconnects)
		t.Logf("%s: %d devices, SIGTERM to exit %s; %d reconnects, peak %d/s (pacing: %.0f/s over %s); %d sessions opened, peak %d/s",
			d.node, d.devices, d.exited.Sub(d.start).Round(time.Millisecond), len(reconnects), peak, paced, pushdDrainSpread,
			len(opened), peakPerSecond(opened))
		if float64(peak) > 2*paced+10 {
			t.Errorf("%s's drain peaked at %d reconnects/s, over twice its pacing (%.0f/s)", d.node, peak, paced)
		}
		if took := d.exited.Sub(d.start); took > 20*time.Second {
			t.Errorf("%s took %s to exit after SIGTERM: the unit's TimeoutStopSec is 30 s", d.node, took)
		}
	}
	t.Logf("%d devices, %d pushes stored during the rolling restart: 0 lost, 0 duplicates after dedupe; answers by HTTP status %v",
		devices, stored, p.answers())
	f.check(t)
	if a := p.answers(); a[401] != 0 {
		t.Errorf("%d pushes with a valid key answered 401", a[401])
	}
}
