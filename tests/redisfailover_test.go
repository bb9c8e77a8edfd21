package tests

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams/streamstest"
)

// The Redis failover drills run once each by default; the soak is ten:
//
//	go test ./tests -run TestRedisFailover -failover.runs 10 -v
var (
	failoverRuns    = flag.Int("failover.runs", 1, "runs of each Redis failover drill (tests/redisfailover_test.go)")
	failoverDevices = flag.Int("failover.devices", 1000, "devices in each Redis failover drill")
)

// failoverPushers is how many business-server loops push during a drill,
// each a batch of failoverBatch devices at a time, each push retried
// through the nodes until one answers stored.
const (
	failoverPushers = 4
	failoverBatch   = 20
)

// TestRedisFailover_Strict: three pushd processes on a Sentinel-watched
// primary with two replicas (the 3-host layout: a Redis and a Sentinel per
// host), --durability strict (appendfsync always, each push waits for a
// replica). Under continuous pushes to the fleet, the primary is killed
// (SIGKILL), the Sentinels promote a replica, and the killed server is
// started again and rejoins as a replica. Every push answered stored
// reaches its device (0 lost) and no device that lost anything was told
// recovered: true; the time pushes were refused is measured.
func TestRedisFailover_Strict(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("kills a Redis primary under three pushd processes")
	}
	runFailoverDrills(t, false)
}

// TestRedisFailover_Fast is the same drill with --durability fast
// (appendfsync everysec, no waiting for replicas): it reports how many
// acknowledged pushes the failover lost, and how many of those no device
// was told about.
func TestRedisFailover_Fast(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("kills a Redis primary under three pushd processes")
	}
	runFailoverDrills(t, true)
}

// drillResult is what one failover drill measured.
type drillResult struct {
	stored        int           // pushes answered stored
	deviceStored  int           // device-pushes answered stored
	refused       time.Duration // kill → the first push sent after it and answered stored
	refusals      int           // answers in that time that were not stored (503, stored:false, transport errors)
	unavailable   int           // of those, 503 unavailable
	lost          int           // device-pushes answered stored that never reached their device
	silent        int           // devices that lost some and were never told (WELCOME recovered:false or a gap)
	unrecovered   int           // devices told recovered:false (or a gap) after the kill
	failoverTaken time.Duration // kill → the Sentinels name the new primary
	failovers     int           // failovers the Sentinels made (their config epoch)
}

func runFailoverDrills(t *testing.T, fast bool) {
	mode := "strict"
	if fast {
		mode = "fast"
	}
	var results []drillResult
	for run := 1; run <= *failoverRuns; run++ {
		t.Run(fmt.Sprint("run-", run), func(t *testing.T) {
			r := failoverDrill(t, fast)
			results = append(results, r)
			t.Logf("%s run %d: %d devices, %d pushes stored (%d device-pushes); primary killed: Sentinel failover %v, pushes refused for %v (%d answers not stored, %d of them 503); %d failover(s); %d acknowledged device-pushes lost, %d devices lost some without being told, %d told recovered:false",
				mode, run, *failoverDevices, r.stored, r.deviceStored, r.failoverTaken.Round(time.Millisecond),
				r.refused.Round(time.Millisecond), r.refusals, r.unavailable, r.failovers, r.lost, r.silent, r.unrecovered)
			if !fast && (r.lost != 0 || r.silent != 0) {
				t.Errorf("strict mode lost %d acknowledged device-pushes (%d devices not told)", r.lost, r.silent)
			}
		})
	}
	if len(results) == 0 {
		return
	}
	refused := make([]time.Duration, len(results))
	lost, silent, lossy := 0, 0, 0
	for i, r := range results {
		refused[i] = r.refused
		lost += r.lost
		silent += r.silent
		if r.lost > 0 {
			lossy++
		}
	}
	sort.Slice(refused, func(i, j int) bool { return refused[i] < refused[j] })
	t.Logf("%s, %d runs of %d devices: pushes refused p50 %v, max %v; acknowledged device-pushes lost: %d in all, in %d of %d runs; devices that lost some and were not told: %d",
		mode, len(results), *failoverDevices, refused[len(refused)/2].Round(time.Millisecond),
		refused[len(refused)-1].Round(time.Millisecond), lost, lossy, len(results), silent)
}

// failoverDrill runs one drill and reports what it measured.
func failoverDrill(t *testing.T, fast bool) drillResult {
	fsync, flags := "always", []string{"--durability", "strict"}
	if fast {
		fsync, flags = "everysec", []string{"--durability", "fast"}
	}
	sen := streamstest.StartSentinel(t, streamstest.Replicas(2), streamstest.AppendFsync(fsync))
	nodes, tok := startRegionOn(t, sen.URL(), flags...)
	app := createApp(t, nodes[0], tok, "failover")
	f := startFleet(t, app, nodes, "dev", *failoverDevices)
	f.waitConnected(t, 120*time.Second)
	p := newPusher(t, app, nodes)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var pushErr error
	ids := f.ids()
	for w := 0; w < failoverPushers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; ; k += failoverPushers {
				select {
				case <-stop:
					return
				default:
				}
				from := (k * failoverBatch) % len(ids)
				batch := ids[from:min(from+failoverBatch, len(ids))]
				if err := p.push(batch); err != nil {
					errMu.Lock()
					pushErr = err
					errMu.Unlock()
					return
				}
			}
		}()
	}
	storedAfter := func(at time.Time) int {
		p.mu.Lock()
		defer p.mu.Unlock()
		n := 0
		for _, a := range p.attempts {
			if a.stored && a.sent.After(at) {
				n++
			}
		}
		return n
	}
	start := time.Now()
	poll.Until(t, 60*time.Second, func() error {
		if n := storedAfter(start); n < 100 {
			return fmt.Errorf("%d pushes stored before the kill", n)
		}
		return nil
	})

	old := sen.Primary()
	killed := time.Now()
	old.Stop()
	primary := sen.WaitFailover(old, 60*time.Second)
	failoverTaken := time.Since(killed)
	poll.Until(t, 60*time.Second, func() error {
		if n := storedAfter(killed); n < 100 {
			return fmt.Errorf("%d pushes stored since the kill (the Sentinels name %s)", n, primary.Addr())
		}
		return nil
	})
	// Its host's systemd starts the killed server again: it comes back
	// with its own data, as a primary, until the Sentinels make it a
	// replica of the new one; pushes go on meanwhile.
	old.Restart()
	sen.WaitHealthy(60 * time.Second)
	close(stop)
	wg.Wait()
	if pushErr != nil {
		t.Fatalf("a push never got stored: %v", pushErr)
	}

	r := drillResult{failoverTaken: failoverTaken, failovers: sen.Failovers()}
	if now := sen.Primary(); now != primary {
		t.Logf("the Sentinels failed over again, to %s", now.Addr())
	}
	p.mu.Lock()
	for _, a := range p.attempts {
		if a.stored {
			r.stored++
		}
	}
	var back time.Time
	for _, a := range p.attempts {
		if a.stored && a.sent.After(killed) && (back.IsZero() || a.at.Before(back)) {
			back = a.at
		}
	}
	for _, a := range p.attempts {
		if !a.stored && a.at.After(killed) && a.at.Before(back) {
			r.refusals++
			if a.status == http.StatusServiceUnavailable {
				r.unavailable++
			}
		}
		// A push the failover kept from being stored is refused with
		// 503 and Retry-After, or answered stored:false (HTTP 200), or
		// its connection failed; anything else is a bug.
		if a.at.After(killed) && !(a.status == 0 || a.status == http.StatusOK ||
			a.status == http.StatusServiceUnavailable && a.retryAfter == "1") {
			t.Errorf("a push answered HTTP %d (Retry-After %q) during the failover, want 200 or 503 with Retry-After: 1", a.status, a.retryAfter)
		}
	}
	for _, want := range p.stored {
		r.deviceStored += len(want)
	}
	p.mu.Unlock()
	r.refused = back.Sub(killed)

	// Strict: everything stored arrives. Fast: wait until nothing more
	// arrives for a while, then count what never did.
	if !fast {
		poll.Until(t, 120*time.Second, func() error { return arrived(p, f) })
	} else {
		last, since := -1, time.Now()
		poll.Until(t, 120*time.Second, func() error {
			n := received(f)
			if n != last {
				last, since = n, time.Now()
			}
			if arrived(p, f) == nil || time.Since(since) > 10*time.Second {
				return nil
			}
			return fmt.Errorf("%d messages received so far", n)
		})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range f.devices {
		d.mu.Lock()
		got := slices.Clone(d.got)
		told := false
		for _, at := range d.unrecovered {
			if at.After(killed) {
				told = true
			}
		}
		d.mu.Unlock()
		seen := map[string]bool{}
		for _, g := range got {
			seen[g] = true
		}
		missing := 0
		for _, w := range p.stored[d.id] {
			if !seen[w] {
				missing++
			}
		}
		r.lost += missing
		if missing > 0 && !told {
			r.silent++
		}
		if told {
			r.unrecovered++
		}
	}
	if r.lost > 0 {
		// What the Sentinels did, for the loss to be explained.
		for _, sn := range sen.Sentinels() {
			b, _ := os.ReadFile(filepath.Join(sn.Dir(), "redis.log"))
			var events []string
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, " # ") {
					events = append(events, line)
				}
			}
			t.Logf("sentinel %s:\n%s", sn.Addr(), strings.Join(events, "\n"))
		}
	}
	f.check(t)
	// The status the operators read names the new primary and its
	// replicas in sync.
	code, raw := admin(t, nodes[0], http.MethodGet, "/v1/admin/status", tok, nil)
	if code != http.StatusOK || !strings.Contains(string(raw), `"addr":"`+primary.Addr()+`"`) {
		t.Errorf("status after the failover: HTTP %d %s; want the new primary %s", code, raw, primary.Addr())
	}
	return r
}

// arrived reports a device whose app has not yet seen every payload stored
// for it (in any order: a push refused during the failover may have
// reached a connected device at most once before its retry was stored),
// or nil.
func arrived(p *pusher, f *fleet) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range f.devices {
		d.mu.Lock()
		seen := make(map[string]int, len(d.got))
		for _, g := range d.got {
			seen[g]++
		}
		d.mu.Unlock()
		for _, w := range p.stored[d.id] {
			if seen[w] == 0 {
				return fmt.Errorf("%s: stored push %s not delivered", d.id, w)
			}
		}
		for g, n := range seen {
			if n > 1 {
				return fmt.Errorf("%s: the app saw %s %d times", d.id, g, n)
			}
		}
	}
	return nil
}

// received counts the messages the fleet's apps saw.
func received(f *fleet) int {
	n := 0
	for _, d := range f.devices {
		d.mu.Lock()
		n += len(d.got)
		d.mu.Unlock()
	}
	return n
}

// TestRedisStrict_UnconfirmedPushAnswers503: a pushd process in strict
// mode waiting for one replica, the replica stopped (SIGSTOP): a push to
// a device not connected anywhere is answered 503 unavailable with
// Retry-After: 1, not stored, and the same push (its idempotency key) is
// answered stored once the replica answers again.
func TestRedisStrict_UnconfirmedPushAnswers503(t *testing.T) {
	t.Parallel()
	primary := streamstest.StartRedis(t)
	replica := streamstest.StartReplica(t, primary)
	n := newNode(t, "n1")
	n.flags = []string{"--durability", "strict", "--redis-wait-replicas", "1", "--redis-wait-timeout", "300ms"}
	n.start(t, primary.URL(), "--bootstrap")
	var tok string
	poll.Until(t, 30*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(n.dir, "admin-token"))
		tok = strings.TrimSpace(string(b))
		return err
	})
	var app appCreds
	poll.Until(t, 30*time.Second, func() error {
		code, raw := admin(t, n, http.MethodPost, "/v1/admin/apps", tok, map[string]any{"id": "strict"})
		if code != http.StatusOK {
			return fmt.Errorf("create app: HTTP %d %s", code, raw)
		}
		return json.Unmarshal(raw, &app)
	})
	body, _ := json.Marshal(map[string]any{"app": app.ID, "devices": []string{"offline"}, "data": "x", "idempotency_key": "once"})
	push := func() (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+n.addr("push")+"/v1/push", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+app.APIKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("push: %v", err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp, string(raw)
	}

	replica.Pause()
	resp, raw := push()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || !strings.Contains(raw, `"unavailable"`) {
		t.Fatalf("push with the replica stopped: HTTP %d, Retry-After %q, %s; want 503 unavailable, Retry-After 1",
			resp.StatusCode, resp.Header.Get("Retry-After"), raw)
	}
	replica.Resume()
	poll.Until(t, 30*time.Second, func() error {
		if resp, raw := push(); resp.StatusCode != http.StatusOK || !strings.Contains(raw, `"stored":true`) {
			return fmt.Errorf("push after the replica came back: HTTP %d %s", resp.StatusCode, raw)
		}
		return nil
	})
}
