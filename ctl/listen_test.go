package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
)

// TestListen_PrintsPushesAndAcks runs listen against a durable node and
// pushes to it with pushctl push --wait-ack: the listener prints each
// message and acks it, which is what ends the wait.
func TestListen_PrintsPushesAndAcks(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	h := harness{env: nodeEnv(node)}
	out, _, stop, _ := h.start(t, "listen", "--device", "phone-1")
	poll.Until(t, 5*time.Second, func() error { return contains(out.String(), "WELCOME") })

	r := h.run(t, "push", "--device", "phone-1", "--data", "hello world", "--wait-ack", "--timeout", "5s").expect(t, exitOK)
	// "stored" is possible too: a push racing the session's replay goes
	// to the inbox, and the session sends it from there.
	m := regexp.MustCompile(`(?m)^phone-1\s+(delivered|stored)\s+1\s+-\s+([0-9.]+)ms$`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("push output:\n%s", r.stdout)
	}
	id := strings.TrimPrefix(strings.SplitN(r.stdout, "\n", 2)[0], "ID: ")
	h.run(t, "push", "--device", "phone-1", "--data-base64", "AP8=", "--priority", "high", "--business", "chat").expect(t, exitOK)

	poll.Until(t, 5*time.Second, func() error { return contains(out.String(), "payload_base64=AP8=") })
	poll.Until(t, 5*time.Second, func() error {
		st := decodeJSON[api.DeviceState](t, h.run(t, "device", "show", "--json", "phone-1").expect(t, exitOK))
		if st.Last != 2 || st.Acked != 2 || st.InboxLen != 0 {
			return fmt.Errorf("device state %+v: want both acked", st)
		}
		return nil
	})
	res := stop().expect(t, exitOK)
	// A PONG line comes whenever the run outlasts the heartbeat interval
	// (400 ms), as a busy machine can make it.
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		if !strings.Contains(line, "  PONG  ") {
			lines = append(lines, line)
		}
	}
	if len(lines) != 3 {
		t.Fatalf("want WELCOME and two PUSH lines, got:\n%s", res.stdout)
	}
	welcome := regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3}  WELCOME  session=\S+ node=n1 heartbeat=400ms recovered=(true|false) epoch=\S+$`)
	if !welcome.MatchString(lines[0]) {
		t.Errorf("welcome line %q", lines[0])
	}
	if want := `PUSH     seq=1 id=` + id + ` business=- priority=normal payload="hello world"`; !strings.HasSuffix(lines[1], want) {
		t.Errorf("push line %q, want suffix %q", lines[1], want)
	}
	if !strings.Contains(lines[2], "seq=2 ") || !strings.Contains(lines[2], "business=chat priority=high payload_base64=AP8=") {
		t.Errorf("binary push line %q", lines[2])
	}
}

// TestListen_JSONOverTCP checks the JSON lines, on the raw TCP transport.
func TestListen_JSONOverTCP(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	h := harness{env: nodeEnv(node)}
	// Stored while offline, replayed after WELCOME.
	h.run(t, "push", "--device", "dev-9", "--data", "while you were out").expect(t, exitOK)
	out, _, stop, _ := h.start(t, "listen", "--device", "dev-9", "--url", node.TCPURL, "--lz4", "-o", "json")
	poll.Until(t, 5*time.Second, func() error { return contains(out.String(), `"PUSH"`) })
	res := stop().expect(t, exitOK)
	dec := json.NewDecoder(strings.NewReader(res.stdout))
	dec.DisallowUnknownFields()
	var evs []listenEvent
	for dec.More() {
		var ev listenEvent
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("%v in:\n%s", err, res.stdout)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 2 || evs[0].Type != "WELCOME" || evs[1].Type != "PUSH" {
		t.Fatalf("events:\n%s", res.stdout)
	}
	if w := evs[0]; w.Node != "n1" || w.HeartbeatMS == nil || *w.HeartbeatMS != 400 || w.Epoch == "" {
		t.Errorf("welcome %+v", w)
	}
	p := evs[1]
	if p.Seq == nil || *p.Seq != 1 || p.Payload == nil || *p.Payload != "while you were out" || p.Priority != "normal" || p.ID == "" {
		t.Errorf("push %+v", p)
	}
	if _, err := time.Parse(time.RFC3339Nano, p.Time); err != nil {
		t.Errorf("time %q: %v", p.Time, err)
	}
}

// TestListen_KickedExits1: another connection of the device takes over.
func TestListen_KickedExits1(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	h := harness{env: nodeEnv(node)}
	out, errOut, _, done := h.start(t, "listen", "--device", "phone")
	poll.Until(t, 5*time.Second, func() error { return contains(out.String(), "WELCOME") })

	c, err := client.DialConn(context.Background(), node.TCPURL, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tok, _ := token.Issue(token.Claims{App: testApp, Device: "phone", KeyID: testKeyID, Expires: time.Now().Add(time.Hour).Unix()}, testSecret)
	if err := c.Send(&wire.Hello{Token: tok, App: testApp, Device: "phone"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("listen still running after a takeover")
	}
	if err := contains(out.String(), "CONTROL  kind=kick"); err != nil {
		t.Error(err)
	}
	if err := contains(errOut.String(), "listen as phone: kicked"); err != nil {
		t.Error(err)
	}
}

// TestListen_RefusedExits1: a token signed with the wrong secret is refused
// for good.
func TestListen_RefusedExits1(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, false)
	env := nodeEnv(node)
	env["PUSHD_SECRET_BASE64"] = base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", 32)))
	r := harness{env: env}.run(t, "listen", "--device", "phone").expect(t, exitFailure)
	if err := contains(r.stderr, "token_bad_signature"); err != nil {
		t.Error(err)
	}
	r = harness{env: nodeEnv(node)}.run(t, "listen", "--device", "phone", "--seq", "3").expect(t, exitUsage)
	if err := contains(r.stderr, "--seq needs --epoch"); err != nil {
		t.Error(err)
	}
}

// TestListen_PrintsControlAndGap covers the lines a healthy node rarely
// produces.
func TestListen_PrintsControlAndGap(t *testing.T) {
	t.Parallel()
	// The fake server lets the test send frames a real node sends only in
	// rare states: a degraded control and a sequence gap.
	srv := newFakeDeviceServer(t, time.Second)
	env := testEnv("")
	env["PUSHD_URL"] = srv.url()
	out, _, stop, _ := harness{env: env}.start(t, "listen", "--device", "d")
	poll.Until(t, 5*time.Second, func() error {
		if !srv.connected("d") {
			return errors.New("not connected")
		}
		return nil
	})
	srv.send("d", &wire.Push{Seq: 1, ID: "m1", Priority: wire.PriorityLow, Group: "", Payload: []byte("a"), Created: uint64(time.Now().UnixMilli())})
	srv.send("d", &wire.Push{Seq: 4, ID: "m4", Priority: wire.PriorityNormal, Payload: []byte("b"), Gap: true})
	srv.send("d", &wire.Control{Kind: wire.ControlDegraded, Priority: wire.PriorityHigh, Businesses: []string{"ads", "promo"}, Reason: "shedding"})
	poll.Until(t, 5*time.Second, func() error { return contains(out.String(), "CONTROL") })
	poll.Until(t, 5*time.Second, func() error {
		if a := srv.ackedOf("d"); a != 4 {
			return fmt.Errorf("acked %d, want 4", a)
		}
		return nil
	})
	res := stop().expect(t, exitOK)
	for _, want := range []string{
		`PUSH     seq=1 id=m1 business=- priority=low payload="a"`,
		"GAP      from=2 to=3",
		`PUSH     seq=4 id=m4 business=- priority=normal payload="b"`,
		`CONTROL  kind=degraded priority=high businesses=ads,promo reason="shedding"`,
	} {
		if err := contains(res.stdout, want); err != nil {
			t.Error(err)
		}
	}
}

// listenEveryFrame sends device d on srv one frame of each kind listen
// prints (repeats and an out-of-order PUSH, which the SDK drops,
// included), waits until out shows each of them with done, then ends the
// session with an ERROR and waits for the reconnect.
func listenEveryFrame(t *testing.T, srv *fakeDeviceServer, out *syncBuffer, done func(s, typ string) int) {
	t.Helper()
	poll.Until(t, 5*time.Second, func() error {
		if !srv.connected("d") {
			return errors.New("not connected")
		}
		return nil
	})
	srv.send("d", &wire.Push{Seq: 1, ID: "m1", Priority: wire.PriorityNormal, Payload: []byte("a")})
	poll.Until(t, 5*time.Second, func() error {
		if a := srv.ackedOf("d"); a != 1 {
			return fmt.Errorf("acked %d, want 1", a)
		}
		return nil
	})
	srv.send("d", &wire.Push{Seq: 1, ID: "m1", Priority: wire.PriorityNormal, Payload: []byte("a"), Redelivery: true})
	srv.send("d", &wire.Push{ID: "g1", Group: "room", Priority: wire.PriorityNormal, Payload: []byte("g"), GroupEpoch: "ge", GroupSeq: 5})
	srv.send("d", &wire.Push{ID: "g1", Group: "room", Priority: wire.PriorityNormal, Payload: []byte("g"), GroupEpoch: "ge", GroupSeq: 5})
	srv.send("d", &wire.CatchUp{Group: "room", Recovered: true, Epoch: "ge", Seq: 5})
	srv.send("d", &wire.Push{Seq: 3, ID: "m3", Priority: wire.PriorityNormal, Payload: []byte("c")})
	srv.send("d", &wire.UpReply{Request: 7, Code: wire.CodeOK, Payload: []byte("pong")})
	poll.Until(t, 5*time.Second, func() error {
		if n := done(out.String(), "PUSH"); n != 5 {
			return fmt.Errorf("%d PUSH lines, want 5:\n%s", n, out.String())
		}
		if done(out.String(), "UP_REPLY") != 1 || done(out.String(), "CATCHUP") != 1 || done(out.String(), "PONG") == 0 {
			return fmt.Errorf("no UP_REPLY, CATCHUP or PONG yet:\n%s", out.String())
		}
		return nil
	})
	srv.send("d", &wire.Error{Code: wire.CodeHeartbeatMissed, Message: "idle"})
	poll.Until(t, 5*time.Second, func() error {
		if n := done(out.String(), "WELCOME"); n != 2 {
			return fmt.Errorf("%d WELCOME lines, want 2 (a reconnect after the ERROR):\n%s", n, out.String())
		}
		return nil
	})
}

// TestListen_PrintsEveryFrame: PONG, UP_REPLY and ERROR get lines too,
// and so do the repeats the SDK drops.
func TestListen_PrintsEveryFrame(t *testing.T) {
	t.Parallel()
	srv := newFakeDeviceServer(t, 200*time.Millisecond)
	env := testEnv("")
	env["PUSHD_URL"] = srv.url()
	out, errOut, stop, _ := harness{env: env}.start(t, "listen", "--device", "d")
	lines := func(s, typ string) int {
		return len(regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d{3}  `+typ+` `).FindAllString(s, -1))
	}
	listenEveryFrame(t, srv, out, lines)
	res := stop().expect(t, exitOK)
	for _, want := range []string{
		`PUSH     seq=1 id=m1 business=- priority=normal payload="a"`,
		`PUSH     seq=1 id=m1 business=- priority=normal redelivered=true duplicate=true payload="a"`,
		`PUSH     seq=0 id=g1 business=- priority=normal group=room group_epoch=ge group_seq=5 payload="g"`,
		`PUSH     seq=0 id=g1 business=- priority=normal group=room group_epoch=ge group_seq=5 duplicate=true payload="g"`,
		`CATCHUP  group=room recovered=true epoch=ge seq=5`,
		`PUSH     seq=3 id=m3 business=- priority=normal out_of_order=true payload="c"`,
		`UP_REPLY request=7 code=ok payload="pong"`,
		`ERROR    code=heartbeat_missed request=0 message="idle"`,
	} {
		if err := contains(res.stdout, want); err != nil {
			t.Error(err)
		}
	}
	if !regexp.MustCompile(`(?m)  PONG     ping_time=\d+ rtt=\d+m?s$`).MatchString(res.stdout) {
		t.Errorf("no PONG line in:\n%s", res.stdout)
	}
	if err := contains(errOut.String(), "heartbeat_missed"); err != nil {
		t.Error(err)
	}
}

// TestListen_JSONEveryFrame: with -o json, one object per frame.
func TestListen_JSONEveryFrame(t *testing.T) {
	t.Parallel()
	srv := newFakeDeviceServer(t, 200*time.Millisecond)
	env := testEnv("")
	env["PUSHD_URL"] = srv.url()
	out, _, stop, _ := harness{env: env}.start(t, "listen", "--device", "d", "--json")
	lines := func(s, typ string) int { return strings.Count(s, `"type":"`+typ+`"`) }
	listenEveryFrame(t, srv, out, lines)
	res := stop().expect(t, exitOK)

	dec := json.NewDecoder(strings.NewReader(res.stdout))
	dec.DisallowUnknownFields()
	byType := map[string][]listenEvent{}
	for dec.More() {
		var ev listenEvent
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("%v in:\n%s", err, res.stdout)
		}
		byType[ev.Type] = append(byType[ev.Type], ev)
	}
	pushes := byType["PUSH"]
	if len(pushes) != 5 || pushes[0].Duplicate || !pushes[1].Duplicate || !pushes[1].Redelivered ||
		pushes[2].Duplicate || !pushes[3].Duplicate || pushes[3].Group != "room" || !pushes[4].OutOfOrder ||
		pushes[2].GroupEpoch != "ge" || pushes[2].GroupSeq == nil || *pushes[2].GroupSeq != 5 || pushes[0].GroupSeq != nil {
		t.Errorf("PUSH events %+v in:\n%s", pushes, res.stdout)
	}
	if r := byType["UP_REPLY"]; len(r) != 1 || r[0].Request == nil || *r[0].Request != 7 || r[0].Code != "ok" ||
		r[0].Payload == nil || *r[0].Payload != "pong" {
		t.Errorf("UP_REPLY events %+v", r)
	}
	if e := byType["ERROR"]; len(e) != 1 || e[0].Code != "heartbeat_missed" || e[0].Message == nil || *e[0].Message != "idle" ||
		e[0].Request == nil || *e[0].Request != 0 {
		t.Errorf("ERROR events %+v", e)
	}
	if c := byType["CATCHUP"]; len(c) != 1 || c[0].Group != "room" || c[0].Recovered == nil || !*c[0].Recovered ||
		c[0].Epoch != "ge" || c[0].Seq == nil || *c[0].Seq != 5 {
		t.Errorf("CATCHUP events %+v", c)
	}
	if p := byType["PONG"]; len(p) == 0 || p[0].PingTime == nil || p[0].RTTMS == nil {
		t.Errorf("PONG events %+v", p)
	}
	if len(byType["WELCOME"]) != 2 {
		t.Errorf("WELCOME events %+v", byType["WELCOME"])
	}
}

// TestListen_AsAUserWithTagsPlatformAndVersion: what listen declares is
// what pushes to users and filtered broadcasts select on.
func TestListen_AsAUserWithTagsPlatformAndVersion(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	h := harness{env: nodeEnv(node)}
	out, _, stop, _ := h.start(t, "listen", "--device", "tablet", "--user", "alice", "--tag", "vip", "--tag", "beta",
		"--platform", "ios", "--version", "2.4.1")
	poll.Until(t, 5*time.Second, func() error { return contains(out.String(), "WELCOME") })

	r := h.run(t, "push", "--user", "alice", "--data", "to alice").expect(t, exitOK)
	if !regexp.MustCompile(`(?m)^alice\s+tablet\s+(delivered|stored)\s+1\s+-$`).MatchString(r.stdout) {
		t.Fatalf("push --user printed\n%s", r.stdout)
	}
	for _, tc := range []struct {
		filter []string
		want   string
	}{
		{[]string{"--filter-platform", "ios", "--filter-tag", "vip", "--filter-version", "2.4.0..2.5"}, "RECIPIENTS: 1"},
		{[]string{"--filter-platform", "android"}, "RECIPIENTS: 0"},
		{[]string{"--filter-tag", "staff"}, "RECIPIENTS: 0"},
		{[]string{"--filter-version", "2.3"}, "RECIPIENTS: 0"},
	} {
		args := append([]string{"push", "--broadcast", "--data", "to " + strings.Join(tc.filter, " ")}, tc.filter...)
		if err := contains(h.run(t, args...).expect(t, exitOK).stdout, tc.want); err != nil {
			t.Errorf("%v: %v", tc.filter, err)
		}
	}
	poll.Until(t, 5*time.Second, func() error { return contains(out.String(), "payload=\"to --filter-platform ios") })
	res := stop().expect(t, exitOK)
	if strings.Count(res.stdout, "PUSH ") != 2 || !strings.Contains(res.stdout, `payload="to alice"`) {
		t.Fatalf("listen printed\n%s", res.stdout)
	}
}

func TestListen_UserAndTagNeedAMintedToken(t *testing.T) {
	t.Parallel()
	env := testEnv("")
	env["PUSHD_URL"] = "ws://127.0.0.1:1/v1/ws"
	r := harness{env: env}.run(t, "listen", "--device", "d", "--token", "v1.x.y", "--user", "alice").expect(t, exitUsage)
	if err := contains(r.stderr, "--user and --tag go into the token pushctl mints"); err != nil {
		t.Error(err)
	}
	r = harness{env: env}.run(t, "listen", "--device", "d", "--tag", "bad tag").expect(t, exitUsage)
	if err := contains(r.stderr, `cannot mint a token for "d"`); err != nil {
		t.Error(err)
	}
}

// TestListen_ResumesAGroupFromItsCursor: --group-cursor is where the
// catch-up starts; CATCHUP says where it ended.
func TestListen_ResumesAGroupFromItsCursor(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	h := harness{env: nodeEnv(node)}
	stream := decodeJSON[api.GroupStream](t, h.run(t, "group", "stream", "room", "--max-len", "10", "--max-age", "1h", "--json").expect(t, exitOK))
	h.run(t, "group", "add", "room", "--device", "phone").expect(t, exitOK)
	for _, m := range []string{"m1", "m2", "m3"} {
		h.run(t, "push", "--group", "room", "--data", m).expect(t, exitOK)
	}
	out, _, stop, _ := h.start(t, "listen", "--device", "phone", "--group-cursor", "room="+stream.Epoch+":1")
	poll.Until(t, 5*time.Second, func() error { return contains(out.String(), "CATCHUP") })
	res := stop().expect(t, exitOK)
	for _, want := range []string{
		"group=room group_epoch=" + stream.Epoch + " group_seq=2 payload=\"m2\"",
		"group=room group_epoch=" + stream.Epoch + " group_seq=3 payload=\"m3\"",
		"CATCHUP  group=room recovered=true epoch=" + stream.Epoch + " seq=3",
	} {
		if err := contains(res.stdout, want); err != nil {
			t.Error(err)
		}
	}
	if strings.Contains(res.stdout, `"m1"`) {
		t.Errorf("m1 is at or below the cursor, yet came:\n%s", res.stdout)
	}
}

func TestListen_GroupCursorUsageErrors(t *testing.T) {
	t.Parallel()
	env := testEnv("")
	env["PUSHD_URL"] = "ws://127.0.0.1:1/v1/ws"
	for _, tc := range []struct{ value, want string }{
		{"room", "want GROUP=EPOCH:SEQ"},
		{"room=abc", "want GROUP=EPOCH:SEQ"},
		{"bad group=abc:1", "want GROUP=EPOCH:SEQ"},
		{"room=abc:x", `sequence number "x"`},
	} {
		r := harness{env: env}.run(t, "listen", "--device", "d", "--group-cursor", tc.value).expect(t, exitUsage)
		if err := contains(r.stderr, tc.want); err != nil {
			t.Errorf("%q: %v", tc.value, err)
		}
	}
	r := harness{env: env}.run(t, "listen", "--device", "d", "--group-cursor", "room=a:1", "--group-cursor", "room=a:2").expect(t, exitUsage)
	if err := contains(r.stderr, "group room given twice"); err != nil {
		t.Error(err)
	}
}
