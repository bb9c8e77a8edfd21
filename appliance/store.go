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
	// Config is the store's configuration, defaults applied.
	Config() streams.Config

	Append(ctx context.Context, msg streams.Message, devices []string) ([]streams.Appended, error)
	AppendMany(ctx context.Context, reqs []streams.AppendRequest) ([]streams.AppendResult, error)
	ReadMany(ctx context.Context, reqs []streams.ReadRequest) ([]streams.ReadResult, error)
	AckMany(ctx context.Context, reqs []streams.AckRequest) ([]bool, error)
	Device(ctx context.Context, device string) (streams.DeviceInfo, error)

	OpenMany(ctx context.Context, reqs []streams.OpenRequest) []streams.Opened
	ReleaseRoutes(ctx context.Context, devices []string, routes []streams.Route) ([]bool, error)
	RefreshRoutes(ctx context.Context, devices []string, routes []streams.Route) ([]bool, error)
	Routes(ctx context.Context, devices []string) ([]streams.Route, error)

	Deliver(ctx context.Context, byNode map[string][][]byte) error
	DeliverIDs(ctx context.Context, byNode map[string][][]byte) (map[string]string, error)
	Delivered(ctx context.Context, node, id string) (bool, error)
	EnsureGroup(ctx context.Context, node string) error
	ReadDeliveries(ctx context.Context, node string, count int, block time.Duration) ([]streams.Delivery, error)
	PendingDeliveries(ctx context.Context, node string, count int) ([]streams.Delivery, error)
	AckDeliveries(ctx context.Context, node string, ids []string) error
	TakeOver(ctx context.Context, deadNode, consumer string, count int) ([]streams.Delivery, error)
	RetireNode(ctx context.Context, node string) error

	MarkOnce(ctx context.Context, name string, ttl time.Duration) (bool, error)
	UserDevices(ctx context.Context, users []string) ([][]string, error)
	User(ctx context.Context, user string) (streams.UserInfo, error)
	ChangeMembers(ctx context.Context, group string, add bool, members []streams.MemberChange) ([]streams.MemberResult, error)
	Group(ctx context.Context, group string, cursor uint64, count int) (streams.GroupInfo, error)
	SetGroupStream(ctx context.Context, group string, maxLen int64, maxAge time.Duration) (streams.GroupStream, error)
	AppendGroup(ctx context.Context, group string, msg streams.GroupMessage) (epoch string, seq uint64, err error)
	ReadGroups(ctx context.Context, reads []streams.GroupRead) ([]streams.GroupReadResult, error)

	Heartbeat(ctx context.Context, info streams.NodeInfo) (continued bool, err error)
	Leave(ctx context.Context, node string) error
	Nodes(ctx context.Context) (live []streams.NodeInfo, dead []string, err error)

	// Topology describes the primaries and replicas, for status.
	Topology(ctx context.Context) (streams.Topology, error)
}

// inboxKey names a device's inbox and route in the Store. Device ids are
// unique within an app only; neither id may contain '/', so the pair is
// unambiguous. Users (app/user) and groups (groupKey) are named the same
// way.
func inboxKey(app, device string) string { return app + "/" + device }
