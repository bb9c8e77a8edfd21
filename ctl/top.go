package ctl

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/api"
)

func topCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "top",
		Usage: "watch the region's traffic live: per node and for the region",
		Description: "Reads the region's status (every member's counters) every --interval and shows, per node\n" +
			"and for the region, connections and the rates of handshakes, pushes, deliveries, acks,\n" +
			"retransmits and slow-consumer cuts, with each node's state, Raft role and view of Redis, and\n" +
			"the degrade policy. On a terminal the view is redrawn in place; otherwise each reading is\n" +
			"printed after the last (one JSON object per line with -o json). --once prints one reading,\n" +
			"taken over one interval, and exits. Stop it with Ctrl-C.",
		Flags: adminFlags(
			&cli.DurationFlag{Name: "interval", Usage: "time between readings, and the window of each rate", Value: 2 * time.Second},
			&cli.BoolFlag{Name: "once", Usage: "print one reading and exit"},
		),
		Action: func(c *cli.Context) error { return runTop(c, e) },
	}
}

// topFrame is one reading of pushctl top: rates over the interval since
// the previous reading.
type topFrame struct {
	Time     time.Time        `json:"time"`
	Interval float64          `json:"interval_s"`
	Leader   string           `json:"leader"`
	Redis    string           `json:"redis"`
	Degrade  api.DegradeState `json:"degrade"`
	Nodes    []topNode        `json:"nodes"`
	Region   topRates         `json:"region"`
}

type topNode struct {
	ID string `json:"id"`
	// State is serving, starting, draining, stopping, full, or down (did
	// not answer).
	State     string `json:"state"`
	RaftState string `json:"raft_state,omitempty"`
	Redis     string `json:"redis,omitempty"`
	topRates
}

// topRates are a node's (or the region's) connections and rates per
// second over the interval.
type topRates struct {
	Connections      int64   `json:"connections"`
	Handshakes       float64 `json:"handshakes_per_s"`
	Pushes           float64 `json:"pushes_per_s"`
	Deliveries       float64 `json:"deliveries_per_s"`
	Acks             float64 `json:"acks_per_s"`
	Retransmits      float64 `json:"retransmits_per_s"`
	SlowConsumerCuts float64 `json:"slow_consumer_cuts_per_s"`
}

func (r *topRates) add(o topRates) {
	r.Connections += o.Connections
	r.Handshakes += o.Handshakes
	r.Pushes += o.Pushes
	r.Deliveries += o.Deliveries
	r.Acks += o.Acks
	r.Retransmits += o.Retransmits
	r.SlowConsumerCuts += o.SlowConsumerCuts
}

func runTop(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	interval := c.Duration("interval")
	if interval < 100*time.Millisecond {
		return usagef("--interval %s: must be at least 100ms", interval)
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	once := c.Bool("once")
	redraw := f == formatTable && !once && isTerminal(e.stdout)
	prev, err := cl.Status(c.Context)
	if err != nil {
		return adminFailed("top", err)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for frames := 0; ; frames++ {
		select {
		case <-c.Context.Done():
			return nil
		case <-t.C:
		}
		cur, err := cl.Status(c.Context)
		if err != nil {
			if once || c.Context.Err() != nil {
				return adminFailed("top", err)
			}
			fmt.Fprintf(e.stderr, "pushctl: top: %v; trying again in %s\n", err, interval)
			continue
		}
		frame := topReading(prev, cur, interval)
		prev = cur
		switch {
		case f == formatJSON:
			err = writeJSON(e.stdout, frame)
		case redraw:
			// Home the cursor and clear the screen: the view stays put.
			fmt.Fprint(e.stdout, "\x1b[H\x1b[2J")
			err = printTop(e.stdout, frame)
		default:
			if frames > 0 {
				fmt.Fprintln(e.stdout)
			}
			err = printTop(e.stdout, frame)
		}
		if err != nil || once {
			return err
		}
	}
}

// isTerminal reports whether w is a terminal, where top redraws in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// topReading turns two status readings into rates. A node's rates use
// its own clock between its two counter readings; a node that restarted
// in between (its counters went back) is given its totals since then
// over the whole interval, and a node without two readings rates of 0.
func topReading(prev, cur *api.RegionStatus, interval time.Duration) topFrame {
	fr := topFrame{Time: time.Now().UTC(), Interval: interval.Seconds(), Leader: cur.Leader, Redis: cur.Redis,
		Degrade: cur.Degrade, Nodes: []topNode{}}
	before := map[string]*api.NodeCounters{}
	for _, n := range prev.Nodes {
		before[n.ID] = n.Counters
	}
	for _, n := range cur.Nodes {
		tn := topNode{ID: n.ID, State: "down"}
		if n.Alive {
			tn.State, tn.RaftState, tn.Redis = "serving", n.RaftState, n.Redis
			if n.Refusing != "" {
				tn.State = n.Refusing
			}
			tn.Connections = n.Connections
			if p, c := before[n.ID], n.Counters; p != nil && c != nil {
				tn.topRates = rates(*p, *c, tn.Connections, interval)
			}
			fr.Region.add(tn.topRates)
		}
		fr.Nodes = append(fr.Nodes, tn)
	}
	return fr
}

func rates(p, c api.NodeCounters, conns int64, interval time.Duration) topRates {
	dt := c.Time.Sub(p.Time).Seconds()
	if c.Handshakes < p.Handshakes || c.Pushes < p.Pushes || c.Deliveries < p.Deliveries || c.Acks < p.Acks ||
		c.Retransmits < p.Retransmits || c.SlowConsumerCuts < p.SlowConsumerCuts {
		p, dt = api.NodeCounters{}, interval.Seconds() // restarted
	}
	if dt <= 0 {
		return topRates{Connections: conns}
	}
	per := func(a, b uint64) float64 { return float64(b-a) / dt }
	return topRates{Connections: conns, Handshakes: per(p.Handshakes, c.Handshakes), Pushes: per(p.Pushes, c.Pushes),
		Deliveries: per(p.Deliveries, c.Deliveries), Acks: per(p.Acks, c.Acks), Retransmits: per(p.Retransmits, c.Retransmits),
		SlowConsumerCuts: per(p.SlowConsumerCuts, c.SlowConsumerCuts)}
}

func printTop(w io.Writer, fr topFrame) error {
	degrade := "off"
	if d := fr.Degrade; d.Active {
		degrade = "on: sheds " + d.Priority
		if len(d.Businesses) > 0 {
			degrade += " of " + strings.Join(d.Businesses, ",")
		}
		degrade += " (" + d.Reason + ")"
	}
	leader := fr.Leader
	if leader == "" {
		leader = "none"
	}
	fmt.Fprintf(w, "region: leader %s, redis %s, degrade %s; %s, rates over %s\n\n", leader, fr.Redis, degrade,
		fr.Time.Format(time.RFC3339), time.Duration(fr.Interval*float64(time.Second)))
	t := newTable(w, "NODE", "STATE", "RAFT", "REDIS", "CONNS", "HANDSHAKES/S", "PUSHES/S", "DELIVERIES/S", "ACKS/S", "RETRANSMITS/S", "SLOW_CUTS/S")
	rate := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	row := func(id, state, raft, redis string, r topRates, alive bool) {
		if !alive {
			t.row(id, state, "", "", "", "", "", "", "", "", "")
			return
		}
		t.row(id, state, raft, redis, strconv.FormatInt(r.Connections, 10), rate(r.Handshakes), rate(r.Pushes),
			rate(r.Deliveries), rate(r.Acks), rate(r.Retransmits), rate(r.SlowConsumerCuts))
	}
	for _, n := range fr.Nodes {
		row(n.ID, n.State, n.RaftState, n.Redis, n.topRates, n.State != "down")
	}
	row("REGION", "", "", "", fr.Region, true)
	return t.flush()
}
