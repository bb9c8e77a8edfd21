package ctl

import (
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
)

// connectUser connects device as user, over the raw protocol, and returns
// once the node welcomed it. It closes with the test.
func connectUser(t *testing.T, n *appliancetest.Node, device, user string) *client.Conn {
	t.Helper()
	tok, err := token.Issue(token.Claims{App: testApp, Device: device, User: user, KeyID: testKeyID, Expires: time.Now().Add(time.Hour).Unix()}, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.DialConn(t.Context(), n.DeviceURL(), client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Send(&wire.Hello{Token: tok, App: testApp, Device: device}); err != nil {
		t.Fatal(err)
	}
	if f, err := c.Read(5 * time.Second); err != nil {
		t.Fatal(err)
	} else if _, ok := f.(*wire.Welcome); !ok {
		t.Fatalf("answer to HELLO: %#v", f)
	}
	return c
}

func TestPush_ToUsers(t *testing.T) {
	t.Parallel()
	// Its devices are raw connections that send no PING: the idle limit
	// must not cut them however long a busy machine makes the test.
	n := startTestNode(t, true, func(c *appliance.Config) { c.HeartbeatInterval = time.Minute })
	connectUser(t, n, "phone", "alice")
	h := harness{env: testEnv(n.PushURL)}
	r := h.run(t, "push", "--user", "alice", "--data", "hi").expect(t, exitOK)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "USER") || strings.Join(strings.Fields(lines[2]), " ") != "alice phone delivered 1 -" {
		t.Fatalf("push --user printed\n%s", r.stdout)
	}
	r = h.run(t, "push", "--user", "alice", "--user", "nobody", "--data", "hi").expect(t, exitFailure)
	if err := contains(r.stderr, "1 of 2 results rejected: user nobody (no_devices)"); err != nil {
		t.Error(err)
	}
	out := decodeJSON[pushOutput](t, h.run(t, "push", "--user", "alice", "--data", "hi", "--wait-ack", "--timeout", "200ms", "-o", "json").expect(t, exitFailure))
	if len(out.Results) != 1 || out.Results[0].User != "alice" || out.Results[0].Seq != 3 || out.Results[0].Acked == nil {
		t.Fatalf("push --user -o json: %+v", out)
	}

	r = h.run(t, "user", "show", "alice").expect(t, exitOK)
	for _, want := range []string{"USER    alice", "GROUPS  -"} {
		if err := contains(r.stdout, want); err != nil {
			t.Error(err)
		}
	}
	if !strings.Contains(r.stdout, "phone   true    n1") {
		t.Errorf("user show printed\n%s", r.stdout)
	}
	st := decodeJSON[api.UserState](t, h.run(t, "user", "show", "alice", "-o", "json").expect(t, exitOK))
	if len(st.Devices) != 1 || st.Devices[0].Device != "phone" || !st.Devices[0].Online || len(st.Groups) != 0 {
		t.Fatalf("user show -o json: %+v", st)
	}
	h.run(t, "user", "show").expect(t, exitUsage)
	r = h.run(t, "user", "show", "bad id").expect(t, exitFailure)
	if err := contains(r.stderr, "HTTP 400 invalid_field"); err != nil {
		t.Error(err)
	}
}

func TestGroup_AddShowStreamRemove(t *testing.T) {
	t.Parallel()
	// Its devices are raw connections that send no PING: the idle limit
	// must not cut them however long a busy machine makes the test.
	n := startTestNode(t, true, func(c *appliance.Config) { c.HeartbeatInterval = time.Minute })
	c := connectDevice(t, n, "phone")
	connectUser(t, n, "watch", "carol")
	h := harness{env: testEnv(n.PushURL)}

	r := h.run(t, "group", "add", "room", "--device", "phone", "--user", "carol", "--device", "bad id").expect(t, exitFailure)
	for _, want := range []string{"device:phone   added     1", "user:carol     added     1", "device:bad id  rejected  0         invalid_id"} {
		if err := contains(r.stdout, want); err != nil {
			t.Error(err)
		}
	}
	if err := contains(r.stderr, "group add room: 1 of 3 members rejected: device:bad id (invalid_id)"); err != nil {
		t.Error(err)
	}
	r = h.run(t, "group", "stream", "room", "--max-len", "50", "--max-age", "10m").expect(t, exitOK)
	if err := contains(r.stdout, "group room keeps a catch-up stream of 50 messages, 10m0s"); err != nil {
		t.Error(err)
	}
	r = h.run(t, "push", "--group", "room", "--data", "hello").expect(t, exitOK)
	if err := contains(r.stdout, "RECIPIENTS: 2"); err != nil {
		t.Error(err)
	}
	if err := contains(r.stdout, "GROUP_SEQ: 1 (stream epoch "); err != nil {
		t.Error(err)
	}
	fs, err := readFrames(c, 5*time.Second)
	if err != nil || len(fs) == 0 {
		t.Fatalf("the member got %v, %v", fs, err)
	}
	if p, ok := fs[len(fs)-1].(*wire.Push); !ok || p.Group != "room" || p.GroupSeq != 1 || string(p.Payload) != "hello" {
		t.Fatalf("the member got %#v", fs[len(fs)-1])
	}

	r = h.run(t, "group", "show", "room").expect(t, exitOK)
	for _, want := range []string{"SIZE         2", "STREAM       50 messages, 10m0s; epoch ", "last 1", "device:phone", "user:carol"} {
		if err := contains(r.stdout, want); err != nil {
			t.Error(err)
		}
	}
	st := decodeJSON[api.GroupState](t, h.run(t, "group", "show", "room", "--count", "1", "--all", "-o", "json").expect(t, exitOK))
	if st.Size != 2 || len(st.Members) != 2 || st.NextCursor != "" || st.Stream.MaxLen != 50 {
		t.Fatalf("group show --all -o json: %+v", st)
	}

	r = h.run(t, "user", "show", "carol").expect(t, exitOK)
	if err := contains(r.stdout, "GROUPS  room"); err != nil {
		t.Error(err)
	}
	r = h.run(t, "group", "remove", "room", "--device", "phone").expect(t, exitOK)
	if err := contains(r.stdout, "device:phone  removed  1"); err != nil {
		t.Error(err)
	}
	h.run(t, "group", "stream", "room", "--off").expect(t, exitOK)
	st = decodeJSON[api.GroupState](t, h.run(t, "group", "show", "room", "-o", "json").expect(t, exitOK))
	if st.Size != 1 || st.Stream.MaxLen != 0 {
		t.Fatalf("after remove and --off: %+v", st)
	}
}

func TestGroup_UsageErrorsSendNothing(t *testing.T) {
	t.Parallel()
	n := startTestNode(t, false)
	tp := newTap(t, n.PushURL, tapHooks{})
	h := harness{env: testEnv(tp.url())}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"group", "add", "room"}, "give --device, --user or both"},
		{[]string{"group", "add", "--device", "d"}, "missing GROUP"},
		{[]string{"group", "remove", "a", "b", "--device", "d"}, "unexpected arguments"},
		{[]string{"group", "show", "room", "--count", "0"}, "--count 0: 1 to 1000"},
		{[]string{"group", "show", "room", "--all", "--cursor", "5"}, "--all reads every page"},
		{[]string{"group", "stream", "room"}, "give --max-len and --max-age, or --off"},
		{[]string{"group", "stream", "room", "--max-len", "5"}, "give --max-len and --max-age, or --off"},
		{[]string{"group", "stream", "room", "--max-len", "5000", "--max-age", "1m"}, "--max-len 5000: 1 to 1000"},
		{[]string{"group", "stream", "room", "--max-len", "5", "--max-age", "48h"}, "--max-age 48h0m0s: 1s to 24h"},
		{[]string{"group", "stream", "room", "--off", "--max-len", "5"}, "--off keeps no stream"},
		{[]string{"user", "show", "a", "b"}, "unexpected arguments"},
	}
	for _, tc := range cases {
		r := h.run(t, tc.args...).expect(t, exitUsage)
		if err := contains(r.stderr, tc.want); err != nil {
			t.Errorf("%v: %v", tc.args, err)
		}
	}
	if n := len(tp.requests()); n != 0 {
		t.Fatalf("usage errors sent %d requests", n)
	}
	// A node without a store has no groups: a clear 503, not a crash.
	r := harness{env: testEnv(n.PushURL)}.run(t, "group", "add", "room", "--device", "d").expect(t, exitFailure)
	if err := contains(r.stderr, "HTTP 503 unavailable: this node keeps no groups or users: it has no store"); err != nil {
		t.Error(err)
	}
}
