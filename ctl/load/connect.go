package load

import (
	"context"
	"time"
)

const connectName = "connect"

// maxAutoHold caps how far the hold is stretched to cover heartbeats
// without HeartbeatCheck: with the default 30 s interval, holding for
// 75 s by default would make every run slow.
const maxAutoHold = time.Minute

// Connect opens device sessions from the workers, holds them, and
// measures the connect rate, the sessions that failed or dropped, and the
// server's memory per session. Each session is the raw protocol: HELLO
// with a freshly minted token, WELCOME, then a PING every heartbeat
// interval the WELCOME gave.
type Connect struct {
	// Target is the server and the devices' identity.
	Target Target `json:"target"`
	// Conns is how many sessions to open, at least 1.
	Conns int `json:"conns"`
	// Hold is how long to hold them after the last one connected; 0
	// means not at all. It is stretched to 2.5 heartbeat intervals when
	// that is at most a minute, or always with HeartbeatCheck, so every
	// session has pinged at least twice and the server's idle reaper has
	// had its chance.
	Hold time.Duration `json:"hold"`
	// Rate is connects per second over all workers; 0 means as fast as
	// the workers go (64 handshakes in flight each).
	Rate float64 `json:"rate,omitempty"`
	// HeartbeatCheck counts sessions whose last PONG is more than two
	// intervals old at the end as errors; false leaves them be.
	HeartbeatCheck bool `json:"heartbeat_check,omitempty"`
	// RSS measures the server's memory just before connecting and after
	// the hold; nil means it is not measured (the report's memory fields
	// are null). A failed measurement goes to Plan.Warn.
	RSS Probe `json:"-"`
}

// ConnectReport is what a Connect run measured. pushctl bench connect
// --json prints it as is.
type ConnectReport struct {
	Scenario  string `json:"scenario"`  // "connect"
	Transport string `json:"transport"` // ws, wss, tcp or tls
	Conns     int    `json:"conns"`     // asked for
	Connected int    `json:"connected"`
	Workers   int    `json:"workers"`
	// ConnectPerS is Connected over ConnectS, the time from telling the
	// workers to start until the last one had connected all it could.
	ConnectPerS float64 `json:"connect_per_s"`
	ConnectS    float64 `json:"connect_s"`
	HoldS       float64 `json:"hold_s"`      // the hold, stretched
	HeartbeatS  float64 `json:"heartbeat_s"` // the interval WELCOME gave
	// Errors = ConnectFailures + Drops (+ HeartbeatMisses); ErrorReasons
	// groups them.
	Errors          int     `json:"errors"`
	ConnectFailures int     `json:"connect_failures"`
	Drops           int     `json:"drops"`
	HeartbeatMisses *int    `json:"heartbeat_misses,omitempty"` // only with HeartbeatCheck
	ErrorReasons    Reasons `json:"error_reasons,omitempty"`
	// Server memory: after everything connected and was held, before
	// connecting, and the difference per held connection. null when the
	// server could not be measured.
	ServerRSSBytes       *int64   `json:"server_rss_bytes"`
	ServerRSSBeforeBytes *int64   `json:"server_rss_before_bytes"`
	RSSBytesPerConn      *float64 `json:"rss_bytes_per_conn"`
	DurationS            float64  `json:"duration_s"`
}

func (*Connect) name() string { return connectName }

// Run opens the sessions as p says, holds them, closes them and reports.
// An error means the run could not be carried out (a plan error, a worker
// that failed, ctx done); sessions that failed or dropped are counted in
// the report, not returned.
func (c Connect) Run(ctx context.Context, p Plan) (*ConnectReport, error) {
	switch {
	case c.Conns < 1:
		return nil, planErrorf("%d conns: need at least 1", c.Conns)
	case c.Hold < 0:
		return nil, planErrorf("hold %s: must not be negative", c.Hold)
	case c.Rate < 0:
		return nil, planErrorf("rate %g: must not be negative", c.Rate)
	}
	var err error
	if c.Target, err = c.Target.forRun(true); err != nil {
		return nil, err
	}
	pool, err := p.start(ctx, &c, c.Conns, "connections", c.Target.URL, nil)
	if err != nil {
		return nil, err
	}
	defer pool.close()
	rep := &ConnectReport{Scenario: connectName, Transport: c.Target.transport(), Conns: c.Conns, Workers: pool.size()}
	before := p.measure(ctx, c.RSS, "server RSS", "before connecting")

	start := time.Now()
	conn, err := phase[connected](ctx, pool, cmdStart, evConnected, 0)
	if err != nil {
		return nil, err
	}
	connectDur := time.Since(start)
	rep.Connected, rep.ConnectFailures = conn.OK, conn.Failed
	rep.ConnectS = connectDur.Seconds()
	if connectDur > 0 {
		rep.ConnectPerS = float64(rep.Connected) / connectDur.Seconds()
	}
	hb := time.Duration(conn.HeartbeatMS) * time.Millisecond
	rep.HeartbeatS = hb.Seconds()
	hold := effectiveHold(c.Hold, hb, c.HeartbeatCheck)
	if rep.Connected == 0 {
		hold = 0 // nothing to hold
	}
	rep.HoldS = hold.Seconds()
	p.progress("%d/%d connected in %.2fs; holding %s", rep.Connected, c.Conns, rep.ConnectS, hold)
	if err := sleepCtx(ctx, hold); err != nil {
		return nil, err
	}
	after := p.measure(ctx, c.RSS, "server RSS", "after the hold")
	done, err := phase[held](ctx, pool, cmdStop, evDone, workerStopTimeout)
	if err != nil {
		return nil, err
	}
	rep.DurationS = time.Since(start).Seconds()
	rep.Drops = done.Drops
	if c.HeartbeatCheck {
		rep.HeartbeatMisses = &done.HeartbeatMisses
	}
	rep.Errors = rep.ConnectFailures + rep.Drops + done.HeartbeatMisses
	rep.ErrorReasons.Merge(conn.Errors)
	rep.ErrorReasons.Merge(done.Errors)
	rep.ServerRSSBytes, rep.ServerRSSBeforeBytes = after, before
	if after != nil && before != nil && done.Alive > 0 {
		per := float64(*after-*before) / float64(done.Alive)
		rep.RSSBytesPerConn = &per
	}
	return rep, nil
}

// effectiveHold stretches the hold to 2.5 heartbeat intervals, so every
// connection has pinged at least twice and the server's idle reaper (two
// missed intervals) has had its chance: always with check, otherwise only
// when that is short.
func effectiveHold(hold, hb time.Duration, check bool) time.Duration {
	if hb <= 0 {
		return hold
	}
	need := 2*hb + hb/2
	if check || need <= maxAutoHold {
		return max(hold, need)
	}
	return hold
}
