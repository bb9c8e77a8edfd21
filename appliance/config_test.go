package appliance

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/streams"
)

// TestConfig_DefaultsAreTheDocumentedOnes pins the starting defaults of
// the delivery promise (docs/delivery.md, ../shared/RELIABILITY.md): a
// change to any of them must change this test and the docs together.
func TestConfig_DefaultsAreTheDocumentedOnes(t *testing.T) {
	c := Config{}.withDefaults()
	for _, d := range []struct {
		name      string
		got, want any
	}{
		{"handshake timeout", c.HandshakeTimeout, 5 * time.Second},
		{"max inbound frame", c.MaxFrame, 16 << 10},
		{"inbound frame ceiling", wire.CeilingMaxFrame, 64 << 10},
		{"max push payload", DefaultMaxPayload, 4 << 10},
		{"push payload ceiling", CeilingMaxPayload, 64 << 10},
		{"output queue bytes", c.QueueBytes, 256 << 10},
		{"output queue frames", c.QueueFrames, 512},
		{"write deadline", c.WriteTimeout, 10 * time.Second},
		{"in-flight window", c.Window, 16},
		{"ack timeout", c.AckTimeout, 10 * time.Second},
		{"ack backoff ceiling", c.AckBackoffMax, 60 * time.Second},
		{"heartbeat interval", c.HeartbeatInterval, 30 * time.Second},
		{"missed heartbeats before close", c.MissedHeartbeats, 2},
		{"idle timeout", c.idleTimeout(), 67500 * time.Millisecond},
		{"connect rate per IP", c.ConnectRate, 20.0},
		{"connect burst per IP", c.ConnectBurst, 40},
		{"max message ttl", c.MaxTTL, 72 * time.Hour},
		{"targets per push", c.MaxTargets, 1000},
	} {
		if d.got != d.want {
			t.Errorf("%s: %v, want %v", d.name, d.got, d.want)
		}
	}
	if err := c.validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
}

// TestSession_RetransmitBackoffDoubles: unacked frames are resent after
// the ack timeout, then after twice as long each time, up to the ceiling:
// 10, 20, 40, 60, 60 s with the defaults.
func TestSession_RetransmitBackoffDoubles(t *testing.T) {
	cfg := testConfig()
	cfg.AckTimeout, cfg.AckBackoffMax = 0, 0 // the defaults
	n, err := New(cfg, Deps{})               // no wheel runs: the test is the clock
	if err != nil {
		t.Fatal(err)
	}
	s, st := openSink(t, n, "d1", true)
	s.mu.Lock()
	s.epoch = "e1"
	s.mu.Unlock()
	before := time.Now()
	if got := s.deliver([]offer{{epoch: "e1", seq: 1, frame: wire.AppendPush(nil, &wire.Push{Seq: 1, ID: "m1"})}}); got != offerSent {
		t.Fatalf("deliver = %v", got)
	}
	s.mu.Lock()
	at := s.retryAt
	s.mu.Unlock()
	if first := at.Sub(before); first < 10*time.Second || first > 10*time.Second+time.Second {
		t.Fatalf("first resend due after %s, want 10 s", first)
	}
	for i, want := range []time.Duration{20, 40, 60, 60} {
		if early := s.retransmit(at.Add(-time.Millisecond)); !early.Equal(at) {
			t.Fatalf("resend %d ran before it was due", i+1)
		}
		next := s.retransmit(at)
		if gap := next.Sub(at); gap != want*time.Second {
			t.Fatalf("after resend %d the next is due in %s, want %ds", i+1, gap, want)
		}
		at = next
	}
	s.flush()
	resent := 0
	for _, f := range st.frames() {
		if p, ok := f.(*wire.Push); ok && p.Seq == 1 && p.Redelivery {
			resent++
		}
	}
	if resent != 4 {
		t.Fatalf("%d redeliveries written, want 4", resent)
	}
}

// TestMetrics_AccessLayerSeries: the access layer's series are on
// /metrics with the values of what happened: connections by transport,
// handshakes by outcome, frames and bytes both ways, fan-out timing.
func TestMetrics_AccessLayerSeries(t *testing.T) {
	n := startNode(t, testConfig(), Deps{})
	ws := openRaw(t, n.wsURL(), "on-ws")
	openRaw(t, n.tcpURL(), "on-tcp")
	if err := ws.Send(&wire.Ping{Time: 7}); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ws, 2*time.Second, func(f wire.Frame) bool { _, ok := f.(*wire.Pong); return ok })
	n.fanoutLocal(wire.AppendPush(nil, &wire.Push{ID: "b1", Payload: []byte("x")}), broadcastGroup(testApp), audience{})
	body := scrape(t, n)
	for series, check := range map[string]func(float64) bool{
		`pushd_connections{transport="ws"}`:                        func(v float64) bool { return v == 1 },
		`pushd_connections{transport="tcp"}`:                       func(v float64) bool { return v == 1 },
		`pushd_sessions`:                                           func(v float64) bool { return v == 2 },
		`pushd_handshakes_total{outcome="ok"}`:                     func(v float64) bool { return v == 2 },
		`pushd_device_frames_in_total{type="HELLO"}`:               func(v float64) bool { return v == 2 },
		`pushd_device_frames_in_total{type="PING"}`:                func(v float64) bool { return v == 1 },
		`pushd_device_frames_out_total{type="WELCOME"}`:            func(v float64) bool { return v == 2 },
		`pushd_device_frames_out_total{type="PONG"}`:               func(v float64) bool { return v == 1 },
		`pushd_device_frames_out_total{type="PUSH"}`:               func(v float64) bool { return v == 2 },
		`pushd_device_bytes_in_total`:                              func(v float64) bool { return v > 0 },
		`pushd_device_bytes_out_total`:                             func(v float64) bool { return v > 0 },
		`pushd_fanout_duration_seconds_count`:                      func(v float64) bool { return v == 1 },
		`pushd_fanout_recipients_total`:                            func(v float64) bool { return v == 2 },
		`pushd_connection_closes_total{reason="slow_consumer"}`:    func(v float64) bool { return v == 0 },
		`pushd_connection_closes_total{reason="heartbeat_missed"}`: func(v float64) bool { return v == 0 },
	} {
		raw, err := metricValue(body, series)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		v, err := strconv.ParseFloat(raw, 64)
		if err != nil || !check(v) {
			t.Errorf("%s = %s", series, raw)
		}
	}
}

// TestConfig_MaxTTLWithinTheStores: a node may not promise messages a
// longer life than its store keeps inboxes; by default it takes the
// store's inbox bounds.
func TestConfig_MaxTTLWithinTheStores(t *testing.T) {
	store := streams.New(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), streams.Config{InboxTTL: time.Hour, InboxMaxLen: 50})
	cfg := testConfig()
	cfg.MaxTTL = 2 * time.Hour
	if _, err := New(cfg, Deps{Store: store}); !errors.Is(err, ErrConfig) {
		t.Fatalf("MaxTTL over the store's inbox TTL: %v, want ErrConfig", err)
	}
	n, err := New(testConfig(), Deps{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if tun := n.tun.Load(); tun.maxTTL != time.Hour || tun.inboxMaxLen != 50 {
		t.Fatalf("defaults from the store: max ttl %s, inbox cap %d", tun.maxTTL, tun.inboxMaxLen)
	}
}
