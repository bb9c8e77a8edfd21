package load

import (
	"context"
	"errors"
	"testing"

	"github.com/pushd/pushd/appliance/api"
)

// bridgeAPI is a fake origin push API: it answers every push for region
// "sh" queued, and "failed" for messages whose id it is told to fail,
// and hands the queued ones to the remote fake as stored.
type bridgeAPI struct {
	remote *fakeAPI
	fail   func(n int) bool
	n      int
}

func (b *bridgeAPI) Push(ctx context.Context, req *api.PushRequest) (*api.PushResponse, error) {
	b.remote.mu.Lock()
	b.n++
	n := b.n
	b.remote.mu.Unlock()
	if b.fail != nil && b.fail(n) {
		return &api.PushResponse{ID: "f", Bridged: map[string]string{"sh": api.BridgedFailed}}, nil
	}
	resp, err := b.remote.Push(ctx, &api.PushRequest{App: req.App, Devices: req.Devices, Data: req.Data})
	if err != nil {
		return nil, err
	}
	if req.Regions == nil || len(req.Regions.List) != 1 || req.Regions.List[0] != "sh" {
		return nil, errors.New("the push does not name region sh alone")
	}
	return &api.PushResponse{ID: resp.ID, Bridged: map[string]string{"sh": api.BridgedQueued}}, nil
}

func (b *bridgeAPI) Device(context.Context, string, string) (*api.DeviceState, error) {
	return nil, errors.New("the origin is not asked for device state")
}

// TestBridge_Accounting: pushes answered failed for the region are errors,
// queued ones are received by the devices and acked in their region.
func TestBridge_Accounting(t *testing.T) {
	t.Parallel()
	remote := newFakeAPI()
	origin := &bridgeAPI{remote: remote, fail: func(n int) bool { return n%4 == 0 }}
	plan := Plan{Workers: 2, Spawn: InProcess(scriptedDevices(remote, "b-", 0), nil)}
	rep, err := Bridge{Push: Push{Target: Target{App: "demo", DevicePrefix: "b-", URL: "tcp://127.0.0.1:1", KeyID: "k", Secret: make([]byte, 32)},
		Devices: 8, Batch: 4, Pushes: 80, API: origin}, Region: "sh", Remote: remote}.Run(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Scenario != "bridge" || rep.Region != "sh" || rep.Requested != 80 || rep.Pushes != 60 || rep.Errors != 20 ||
		rep.ErrorReasons["bridged: failed"] != 20 || rep.Received != 60 || rep.Lost != 0 || rep.Unacked != 0 || rep.Duplicates != 0 {
		t.Fatalf("report %+v", rep)
	}
}

func TestBridge_PlanErrors(t *testing.T) {
	t.Parallel()
	base := Push{Target: Target{App: "demo"}, Devices: 1, API: newFakeAPI()}
	for name, b := range map[string]Bridge{
		"no region": {Push: base, Remote: newFakeAPI()},
		"no remote": {Push: base, Region: "sh"},
		"stored":    {Push: func() Push { p := base; p.Stored = true; return p }(), Region: "sh", Remote: newFakeAPI()},
	} {
		if _, err := b.Run(context.Background(), Plan{}); !errors.Is(err, ErrPlan) {
			t.Errorf("%s: %v, want ErrPlan", name, err)
		}
	}
}
