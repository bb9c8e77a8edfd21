package ctl

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta"
)

// startAppRegion starts a region of size nodes holding the test app, and
// a harness for pushctl pointed at node 0's push and admin APIs. Its
// devices may stay silent (silentDevicesStay): the tests' raw
// connections never PING.
func startAppRegion(t *testing.T, size int) (*testRegion, harness) {
	t.Helper()
	app := raftmeta.App{ID: testApp, Secrets: []raftmeta.Secret{{KeyID: testKeyID, Secret: testSecret}},
		APIKeys: []raftmeta.APIKey{{ID: "key-1", Hash: raftmeta.HashKey(testAPIKey)}}}
	r := startTestRegionWith(t, size, appliancetest.RegionOptions{Commands: []raftmeta.Command{raftmeta.CreateApp(app)},
		Config: func(_ int, cfg *appliance.Config) { silentDevicesStay(cfg) }})
	env := testEnv(r.Nodes[0].PushURL)
	maps.Copy(env, r.env(0, r.Viewer))
	return r, harness{env: env}
}

// pushID pushes with pushctl and returns the message id.
func pushID(t *testing.T, h harness, args ...string) string {
	t.Helper()
	r := h.run(t, append([]string{"push", "-o", "json"}, args...)...).expect(t, exitOK)
	return decodeJSON[pushOutput](t, r).ID
}

// hops is a trace's (node, event) pairs in order.
func hops(tr api.Trace) []string {
	var out []string
	for _, e := range tr.Events {
		out = append(out, e.Node+" "+e.Event)
	}
	return out
}

// traceOf polls pushctl trace -o json until the trace holds want, each
// node's hops in the order want gives them (other events may come
// between), and returns it. Hops of different nodes are not compared: a
// trace is in time order, and a node records stored and routed once
// Redis answered, by when the next node may have handed the message
// over already (seen on a busy machine).
func traceOf(t *testing.T, h harness, id string, want ...string) api.Trace {
	t.Helper()
	var tr api.Trace
	poll.Until(t, 10*time.Second, func() error {
		r := h.run(t, "trace", id, "-o", "json")
		if r.code != exitOK {
			return fmt.Errorf("exit %d: %s", r.code, r.stderr)
		}
		tr = decodeJSON[api.Trace](t, r)
		got := hops(tr)
		next := map[string]int{} // node → where in got to look for its next hop
		for _, w := range want {
			node := strings.Fields(w)[0]
			i := next[node]
			for i < len(got) && got[i] != w {
				i++
			}
			if i == len(got) {
				return fmt.Errorf("trace %v lacks %q (want %v, each node's in order)", got, w, want)
			}
			next[node] = i + 1
		}
		return nil
	})
	return tr
}

// event returns the first event of kind on node.
func event(t *testing.T, tr api.Trace, node, kind string) api.TraceEvent {
	t.Helper()
	for _, e := range tr.Events {
		if e.Node == node && e.Event == kind {
			return e
		}
	}
	t.Fatalf("no %s event on %s in %v", kind, node, hops(tr))
	return api.TraceEvent{}
}

// TestTrace_DeliveredMessage: a push through node 0 for a device on node
// 1 shows every hop, on each node, in the table and in JSON.
func TestTrace_DeliveredMessage(t *testing.T) {
	t.Parallel()
	r, h := startAppRegion(t, 3)
	n0, n1 := r.Raft.Member(0).ID, r.Raft.Member(1).ID
	ackAfter(t, connectDevice(t, r.Nodes[1], "phone-1"), 0)
	id := pushID(t, h, "--device", "phone-1", "--data", "hello", "--wait-ack")

	tr := traceOf(t, h, id, n0+" accepted", n0+" stored", n0+" routed", n1+" handed", n1+" written", n1+" acked")
	if tr.ID != id || len(tr.Nodes) != 3 {
		t.Fatalf("trace %+v", tr)
	}
	for _, n := range tr.Nodes {
		if !n.OK {
			t.Fatalf("node %s did not answer: %s", n.ID, n.Error)
		}
	}
	acc := event(t, tr, n0, "accepted")
	if acc.App != testApp || acc.APIKey != "key-1" || acc.Devices != 1 {
		t.Fatalf("accepted %+v", acc)
	}
	st := event(t, tr, n0, "stored")
	if st.Device != "phone-1" || st.Seq != 1 || st.Route != n1 {
		t.Fatalf("stored %+v", st)
	}
	if ro := event(t, tr, n0, "routed"); ro.To != n1 || ro.Targets != 1 || ro.Error != "" {
		t.Fatalf("routed %+v", ro)
	}
	// live: from the delivery entry; fetch: the inbox read every session
	// makes right after it opens came first.
	ha := event(t, tr, n1, "handed")
	if (ha.Via != "live" && ha.Via != "fetch") || !strings.HasPrefix(ha.Session, n1+"-") || ha.Seq != 1 {
		t.Fatalf("handed %+v", ha)
	}
	if ak := event(t, tr, n1, "acked"); ak.Session != ha.Session || ak.Device != "phone-1" {
		t.Fatalf("acked %+v", ak)
	}

	out := h.run(t, "trace", id).expect(t, exitOK).stdout
	rows := tableRows(out)
	if got := strings.Join(rows[0], " "); got != "TIME +MS NODE EVENT DEVICE SEQ DETAIL" {
		t.Fatalf("header %q", got)
	}
	want := map[string]string{
		"accepted": "app dev, API key key-1, 1 device",
		"stored":   "device connected to " + n1,
		"routed":   "delivery entry for 1 device to " + n1,
		"handed":   "session " + ha.Session + " (" + ha.Via + ")",
		"written":  "session " + ha.Session,
		"acked":    "session " + ha.Session,
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(line)
		if _, err := time.Parse("2006-01-02T15:04:05.000000Z", f[0]); err != nil {
			t.Fatalf("time %q: %v", f[0], err)
		}
		if detail, ok := want[f[3]]; ok && !strings.HasSuffix(line, detail) {
			t.Fatalf("%s row %q, want it to end with %q", f[3], line, detail)
		}
		delete(want, f[3])
	}
	if len(want) > 0 {
		t.Fatalf("table lacks %v:\n%s", slices.Collect(maps.Keys(want)), out)
	}
}

// TestTrace_RetransmittedMessage: a device that does not ack in time gets
// the message again; the trace shows both writes and the resend.
func TestTrace_RetransmittedMessage(t *testing.T) {
	t.Parallel()
	r, h := startAppRegion(t, 1)
	n0 := r.Raft.Member(0).ID
	c := connectDevice(t, r.Nodes[0], "slow")
	id := pushID(t, h, "--device", "slow", "--data", "late")
	first := readPush(t, c)
	again := readPush(t, c) // the ack timeout is 300 ms in tests
	if first.Seq != again.Seq || !again.Redelivery {
		t.Fatalf("first %+v, then %+v: want the same message flagged redelivery", first, again)
	}
	if err := c.Send(&wire.Ack{Seq: again.Seq}); err != nil {
		t.Fatal(err)
	}
	tr := traceOf(t, h, id, n0+" accepted", n0+" stored", n0+" handed", n0+" written", n0+" retransmitted", n0+" written", n0+" acked")
	if re := event(t, tr, n0, "retransmitted"); re.Attempt != 2 || re.Seq != first.Seq {
		t.Fatalf("retransmitted %+v", re)
	}
	out := h.run(t, "trace", id).expect(t, exitOK).stdout
	if err := contains(out, "retransmitted  slow    1    session "); err != nil {
		t.Fatal(err)
	}
	if err := contains(out, ", attempt 2\n"); err != nil {
		t.Fatal(err)
	}
}

// TestTrace_DeliveredAfterReconnectToAnotherNode: the device takes the
// message on node 1 without acking, loses that connection and acks it on
// node 2, where its inbox was replayed.
func TestTrace_DeliveredAfterReconnectToAnotherNode(t *testing.T) {
	t.Parallel()
	r, h := startAppRegion(t, 3)
	n1, n2 := r.Raft.Member(1).ID, r.Raft.Member(2).ID
	c := connectDevice(t, r.Nodes[1], "mover")
	id := pushID(t, h, "--device", "mover", "--data", "moving")
	p := readPush(t, c)
	_ = c.Close()
	c2, err := client.DialConn(t.Context(), r.Nodes[2].DeviceURL(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c2.Close() })
	if err := c2.Send(&wire.Hello{Token: testToken(t, "mover"), App: testApp, Device: "mover"}); err != nil {
		t.Fatal(err)
	}
	if again := readPush(t, c2); again.ID != p.ID {
		t.Fatalf("replayed %+v, want message %s", again, p.ID)
	}
	if err := c2.Send(&wire.Ack{Seq: p.Seq}); err != nil {
		t.Fatal(err)
	}
	tr := traceOf(t, h, id, n1+" handed", n1+" written", n2+" handed", n2+" written", n2+" acked")
	a, b := event(t, tr, n1, "handed"), event(t, tr, n2, "handed")
	if (a.Via != "live" && a.Via != "fetch") || b.Via != "replay" || a.Session == b.Session {
		t.Fatalf("handed on %s %+v, then on %s %+v", n1, a, n2, b)
	}
	for _, e := range tr.Events {
		if e.Event == "acked" && e.Node != n2 {
			t.Fatalf("acked on %s: %+v", e.Node, e)
		}
	}
	out := h.run(t, "trace", id).expect(t, exitOK).stdout
	if err := contains(out, "session "+b.Session+" (replay)"); err != nil {
		t.Fatal(err)
	}
}

// TestTrace_GroupMessage: a group push shows where it was accepted, the
// group entries to the other nodes and how many sessions each node
// handed it to.
func TestTrace_GroupMessage(t *testing.T) {
	t.Parallel()
	r, h := startAppRegion(t, 3)
	n0, n1, n2 := r.Raft.Member(0).ID, r.Raft.Member(1).ID, r.Raft.Member(2).ID
	// Group pushes go to the nodes alive at the last node heartbeat:
	// wait until node 0 knows both others.
	poll.Until(t, 10*time.Second, func() error {
		r := h.run(t, "push", "--group", "nobody", "--data", "hi", "-o", "json").expect(t, exitOK)
		if out := decodeJSON[pushOutput](t, r); out.OtherNodes == nil || *out.OtherNodes != 2 {
			return fmt.Errorf("group push reached %v other nodes", out.OtherNodes)
		}
		return nil
	})
	connectDevice(t, r.Nodes[1], "g-1", "news")
	connectDevice(t, r.Nodes[1], "g-2", "news")
	connectDevice(t, r.Nodes[2], "g-3", "news")
	id := pushID(t, h, "--group", "news", "--data", "hi")
	tr := traceOf(t, h, id, n0+" accepted", n0+" fanout")
	for _, want := range []struct {
		node     string
		sessions int
	}{{n0, 0}, {n1, 2}, {n2, 1}} {
		var got *int
		poll.Until(t, 10*time.Second, func() error {
			tr = traceOf(t, h, id, n0+" accepted")
			for _, e := range tr.Events {
				if e.Node == want.node && e.Event == "fanout" {
					got = e.Sessions
					return nil
				}
			}
			return fmt.Errorf("no fanout on %s in %v", want.node, hops(tr))
		})
		if got == nil {
			t.Fatalf("fanout on %s without a session count: %+v", want.node, tr.Events)
		}
		if *got != want.sessions {
			t.Fatalf("fanout on %s to %d sessions, want %d: %+v", want.node, *got, want.sessions, tr.Events)
		}
	}
	if acc := event(t, tr, n0, "accepted"); acc.Group != "news" || acc.Devices != 0 {
		t.Fatalf("accepted %+v", acc)
	}
	routed := map[string]bool{}
	for _, e := range tr.Events {
		if e.Event == "routed" && e.Node == n0 && e.Targets == 0 && e.Error == "" {
			routed[e.To] = true
		}
	}
	if !routed[n1] || !routed[n2] {
		t.Fatalf("group entries to %v, want %s and %s", routed, n1, n2)
	}
	out := h.run(t, "trace", id).expect(t, exitOK).stdout
	for _, want := range []string{"app dev, API key key-1, group news", "2 sessions of group news", "group entry to " + n1} {
		if err := contains(out, want); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTrace_UnknownAndBadIDs(t *testing.T) {
	t.Parallel()
	_, h := startAppRegion(t, 1)
	r := h.run(t, "trace", "0123456789abcdef0123456789abcdef").expect(t, exitFailure)
	if err := contains(r.stderr, "no node holds an event of this message"); err != nil {
		t.Fatal(err)
	}
	if r.stdout != "" {
		t.Fatalf("stdout %q", r.stdout)
	}
	r = h.run(t, "trace", "0123456789abcdef0123456789abcdef", "-o", "json").expect(t, exitFailure)
	if tr := decodeJSON[api.Trace](t, r); len(tr.Events) != 0 || len(tr.Nodes) != 1 || !tr.Nodes[0].OK {
		t.Fatalf("trace %+v", tr)
	}
	for _, args := range [][]string{{"trace"}, {"trace", "a", "b"}, {"trace", "bad id!"}, {"trace", strings.Repeat("x", 129)}} {
		r := h.run(t, args...).expect(t, exitUsage)
		if r.stdout != "" {
			t.Fatalf("%q wrote %q", args, r.stdout)
		}
	}
}

// readPush reads c until a PUSH comes and returns it.
func readPush(t *testing.T, c *client.Conn) *wire.Push {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		fs, err := readFrames(c, time.Until(deadline))
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		for _, f := range fs {
			if p, ok := f.(*wire.Push); ok {
				return p
			}
		}
	}
	t.Fatal("no PUSH within 5s")
	return nil
}
