package load

import (
	"context"
	"errors"
)

const bridgeName = "bridge"

// Bridge measures pushes between regions: its devices are held connected
// to one region (Target, named Region) by the workers, exactly as Push
// holds them, while the pushes go to another region's push API (API)
// with "regions": [Region], through the Kafka bridge. A push counts as
// accepted when its answer says queued for Region. At the end the run
// waits until each device's ack cursor in its region (read through
// Remote, that region's push API) covers what was accepted for it, and
// counts lost and duplicate messages as Push does; latency is the
// origin's push API call to the device's SDK handing the message over.
// Bridge runs online only.
type Bridge struct {
	Push
	// Region is the name of the devices' region, as the origin's bridge
	// knows it. Required.
	Region string `json:"region"`
	// Remote is the devices' region's push API, for their ack cursors.
	// Required.
	Remote PushAPI `json:"-"`
}

func (*Bridge) name() string { return bridgeName }

// work is Push's: a worker holds devices and reports receipts the same
// way, whichever region the pushes came through.
func (s *Bridge) work(ctx context.Context, w *worker) error { return s.Push.work(ctx, w) }

// Run pushes through the origin for Region and accounts for every
// message as Push.Run does; the report's scenario is "bridge".
func (s Bridge) Run(ctx context.Context, p Plan) (*PushReport, error) {
	switch {
	case s.Region == "":
		return nil, planErrorf("no region: name the region the devices are connected to")
	case s.Remote == nil:
		return nil, planErrorf("no push API of the devices' region, for their acks")
	case s.Stored:
		return nil, planErrorf("a bridge run holds its devices online")
	}
	run := s.Push
	run.bridged = &bridgeRun{region: s.Region, state: s.Remote}
	run.wrap = func(p Push) scenario { b := s; b.Push = p; return &b }
	rep, err := run.Run(ctx, p)
	if rep != nil {
		rep.Scenario, rep.Region = bridgeName, s.Region
	}
	if errors.Is(err, ErrPlan) {
		return nil, err
	}
	return rep, err
}
