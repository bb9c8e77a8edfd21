package appliance

import (
	"context"
	"time"

	"github.com/pushd/pushd/streams"
)

// Store is what a node needs from the region's Redis; *streams.Store
// implements it. A node without a Store holds sessions and fan-out only:
// nothing is stored, acked or routed between nodes.
type Store interface {
	Ping(ctx context.Context) error

	Append(ctx context.Context, msg streams.Message, devices []string) ([]streams.Appended, error)
	Resume(ctx context.Context, device string, pos streams.Position, limit int) (streams.Resumed, error)
	ReadMany(ctx context.Context, reqs []streams.ReadRequest) ([]streams.ReadResult, error)
	AckMany(ctx context.Context, reqs []streams.AckRequest) ([]bool, error)
	Device(ctx context.Context, device string) (streams.DeviceInfo, error)

	ClaimRoute(ctx context.Context, device, node string) (uint64, streams.Route, error)
	ReleaseRoute(ctx context.Context, device string, r streams.Route) (bool, error)
	Routes(ctx context.Context, devices []string) ([]streams.Route, error)
	RefreshRoutes(ctx context.Context, devices []string, routes []streams.Route) error

	Deliver(ctx context.Context, byNode map[string][][]byte) error
	EnsureGroup(ctx context.Context, node string) error
	ReadDeliveries(ctx context.Context, node string, count int, block time.Duration) ([]streams.Delivery, error)
	AckDeliveries(ctx context.Context, node string, ids []string) error
	TakeOver(ctx context.Context, deadNode, consumer string, count int) ([]streams.Delivery, error)
	RetireNode(ctx context.Context, node string) error

	Heartbeat(ctx context.Context, info streams.NodeInfo) error
	Nodes(ctx context.Context) (live []streams.NodeInfo, dead []string, err error)
}

// inboxKey names a device's inbox and route in the Store. Device ids are
// unique within an app only; neither id may contain '/', so the pair is
// unambiguous.
func inboxKey(app, device string) string { return app + "/" + device }
