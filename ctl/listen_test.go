package ctl

import (
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
)

// TestListen_PrintsPushesAndAcks runs listen against a durable node and
// pushes to it with pushctl push --wait-ack: the listener prints each
// message and acks it, which is what ends the wait.
func TestListen_PrintsPushesAndAcks(t *testing.T) {
	t.Parallel()
	node := startTestNode(t, true)
	h := harness{env: node.env()}
	out, _, stop, _ := h.start(t, "listen", "--device", "phone-1")
	waitFor(t, 5*time.Second, func() error { return contains(out.String(), "WELCOME") })

	r := h.run(t, "push", "--device", "phone-1", "--data", "hello world", "--wait-ack", "--timeout", "5s").expect(t, exitOK)
	// "stored" is possible too: a push racing the session's replay goes
	// to the inbox, and the session sends it from there.
	m := regexp.MustCompile(`(?m)^phone-1\s+(delivered|stored)\s+1\s+-\s+([0-9.]+)ms$`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("push output:\n%s", r.stdout)
	}
	id := strings.TrimPrefix(strings.SplitN(r.stdout, "\n", 2)[0], "ID: ")
	h.run(t, "push", "--device", "phone-1", "--data-base64", "AP8=", "--priority", "high", "--business", "chat").expect(t, exitOK)

	waitFor(t, 5*time.Second, func() error { return contains(out.String(), "payload_base64=AP8=") })
	waitFor(t, 5*time.Second, func() error {
		st := decodeJSON[DeviceState](t, h.run(t, "device", "show", "--json", "phone-1").expect(t, exitOK))
		if st.Last != 2 || st.Acked != 2 || st.InboxLen != 0 {
			return fmt.Errorf("device state %+v: want both acked", st)
		}
		return nil
	})
	res := stop().expect(t, exitOK)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
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
	h := harness{env: node.env()}
	// Stored while offline, replayed after WELCOME.
	h.run(t, "push", "--device", "dev-9", "--data", "while you were out").expect(t, exitOK)
	out, _, stop, _ := h.start(t, "listen", "--device", "dev-9", "--url", node.tcpURL(), "--lz4", "-o", "json")
	waitFor(t, 5*time.Second, func() error { return contains(out.String(), `"PUSH"`) })
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
	h := harness{env: node.env()}
	out, errOut, _, done := h.start(t, "listen", "--device", "phone")
	waitFor(t, 5*time.Second, func() error { return contains(out.String(), "WELCOME") })

	c, err := client.DialConn(context.Background(), node.tcpURL(), client.DialOptions{})
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
	env := node.env()
	env["PUSHD_SECRET_BASE64"] = base64.StdEncoding.EncodeToString([]byte(strings.Repeat("x", 32)))
	r := harness{env: env}.run(t, "listen", "--device", "phone").expect(t, exitFailure)
	if err := contains(r.stderr, "token_bad_signature"); err != nil {
		t.Error(err)
	}
	r = harness{env: node.env()}.run(t, "listen", "--device", "phone", "--seq", "3").expect(t, exitUsage)
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
	waitFor(t, 5*time.Second, func() error {
		if !srv.connected("d") {
			return errors.New("not connected")
		}
		return nil
	})
	srv.send("d", &wire.Push{Seq: 1, ID: "m1", Priority: wire.PriorityLow, Group: "", Payload: []byte("a"), Created: uint64(time.Now().UnixMilli())})
	srv.send("d", &wire.Push{Seq: 4, ID: "m4", Priority: wire.PriorityNormal, Payload: []byte("b"), Gap: true})
	srv.send("d", &wire.Control{Kind: wire.ControlDegraded, Priority: wire.PriorityHigh, Businesses: []string{"ads", "promo"}, Reason: "shedding"})
	waitFor(t, 5*time.Second, func() error { return contains(out.String(), "CONTROL") })
	waitFor(t, 5*time.Second, func() error {
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
