package appliance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/streams"
)

// The node's exported core: what the HTTP front-ends (appliance/pushapi,
// appliance/adminapi) and embedders call. They decode, authenticate and
// check requests and answer them; the core stores, routes and delivers.
// Nothing here knows about HTTP. Every method is safe for concurrent use.

// Errors of the core. Each says what a front-end should tell its caller.
var (
	// ErrUnauthorized means an API key is not one of the named app's, or
	// the app does not exist, as of the region's metadata when the call
	// was made.
	ErrUnauthorized = errors.New("unknown app or API key")
	// ErrUnavailable means the region's store or metadata could not be
	// reached for what the call needs. Retry with backoff.
	ErrUnavailable = errors.New("unavailable")
)

// App is one app of the region as the push API checks a request against
// it: a view of the node's app table when AuthorizeAPIKey returned it,
// with the API key it was authorized with.
type App struct {
	e   *appEntry
	key int // index of the API key in e.apiKeys
}

// ID is the app's id.
func (a App) ID() string { return a.e.id }

// KeyID is the id of the API key the app was authorized with ("key-1").
func (a App) KeyID() string { return a.e.apiKeyIDs[a.key] }

// BusinessAllowed reports whether a message may carry business b.
func (a App) BusinessAllowed(b string) bool {
	return a.e.businesses == nil || slices.Contains(a.e.businesses, b)
}

// MaxPayload is the largest payload the app may push, in bytes.
func (a App) MaxPayload() int { return a.e.maxPayload }

// RateBurst is the most device messages one request may carry under the
// app's rate limit; 0 when the app has none.
func (a App) RateBurst() int {
	if a.e.limiter == nil {
		return 0
	}
	return int(a.e.limiter.burst)
}

// TakeRate takes units (device messages) from the app's rate limit, or
// reports how long until they would be there. Always true without a
// limit. A request over RateBurst can never pass: check it first.
func (a App) TakeRate(units int, now time.Time) (bool, time.Duration) {
	if a.e.limiter == nil {
		return true, 0
	}
	return a.e.limiter.take(units, now)
}

// AuthorizeAPIKey returns the app appID when key is one of its push API
// keys. An app or key this node does not know yet (created a moment ago
// through another node) is looked up again once the node holds everything
// the region had committed when the call was made: ErrUnauthorized comes
// only after that, and ErrUnavailable when the metadata cannot be
// reached for it.
func (n *Node) AuthorizeAPIKey(ctx context.Context, appID, key string) (App, error) {
	if app := n.apps.Load().apps[appID]; app != nil {
		if k, ok := app.verifyAPIKey(key); ok {
			return App{app, k}, nil
		}
	}
	if n.meta == nil {
		return App{}, ErrUnauthorized
	}
	ctx, cancel := context.WithTimeout(ctx, recheckTimeout)
	defer cancel()
	if err := n.meta.Sync(ctx); err != nil {
		return App{}, ErrUnavailable
	}
	if app := n.currentApps().apps[appID]; app != nil {
		if k, ok := app.verifyAPIKey(key); ok {
			return App{app, k}, nil
		}
	}
	return App{}, ErrUnauthorized
}

// Sheds reports whether the region's degrade policy sheds a message of
// priority p for business b right now, and if so what it sheds and why,
// in words for the caller.
func (n *Node) Sheds(p wire.Priority, business string) (string, bool) {
	d := n.degrade.Load()
	if !d.sheds(p, business) {
		return "", false
	}
	return "the region sheds " + d.describe() + " right now: " + d.reason, true
}

// PushLimits are the bounds a push request is checked against.
type PushLimits struct {
	// MaxTTL is the longest a message may wait in an inbox, and the TTL
	// of a push that names none.
	MaxTTL time.Duration
	// InboxMaxLen caps each device's unacked messages.
	InboxMaxLen int64
	// MaxTargets caps the devices of one push.
	MaxTargets int
}

// PushLimits returns the limits in force on this node now: its
// configuration with the region's tunables over it.
func (n *Node) PushLimits() PushLimits {
	t := n.tun.Load()
	return PushLimits{MaxTTL: t.maxTTL, InboxMaxLen: t.inboxMaxLen, MaxTargets: n.cfg.MaxTargets}
}

// PushDevices stores msg in the inbox of each of app's devices and hands
// it to the nodes holding their sessions, and says per device what
// happened (in the order given; an invalid id is rejected on its own).
// While the store is unreachable the message goes, at most once, to the
// devices connected to this node, and the answer says it was not stored;
// with none of them connected it fails with ErrUnavailable.
func (n *Node) PushDevices(ctx context.Context, app string, msg streams.Message, devices []string) (*api.PushResponse, error) {
	resp := &api.PushResponse{ID: msg.ID, Results: make([]api.PushResult, len(devices))}
	keys := make([]string, 0, len(devices))
	index := make([]int, 0, len(devices)) // keys[i] is devices[index[i]]
	for i, d := range devices {
		resp.Results[i] = api.PushResult{Device: d}
		if !token.ValidID(d) {
			resp.Results[i].Status, resp.Results[i].Reason = api.StatusRejected, "invalid_device"
			continue
		}
		keys = append(keys, inboxKey(app, d))
		index = append(index, i)
	}
	return n.pushKeys(ctx, resp, msg, keys, index)
}

// MaxUserDevices caps the devices a push to users reaches: at most 1,000
// users, each with up to the store's UserMaxDevices (100), would make one
// request a hundred thousand inbox writes.
const MaxUserDevices = 10000

// UserDevices resolves app's users to the ids of the devices a push to
// them reaches (devices[i] are users[i]'s; empty when the user has
// none): the devices seen as the user within the store's UserDeviceTTL,
// which have not connected as another user since. The push API calls it
// before the rate limit, which counts device messages. It fails with
// ErrUnavailable while Redis is unreachable, and ErrNoStore without a
// Store: users live in the region's Redis.
func (n *Node) UserDevices(ctx context.Context, app string, users []string) ([][]string, error) {
	if n.durable == nil {
		return nil, ErrNoStore
	}
	keys := make([]string, len(users))
	for i, u := range users {
		keys[i] = inboxKey(app, u)
	}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	got, err := n.durable.store.UserDevices(ctx, keys)
	n.durable.result(err)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	for _, list := range got {
		for j, d := range list {
			list[j] = strings.TrimPrefix(d, app+"/")
		}
	}
	return got, nil
}

// PushUsers stores msg in the inbox of every device of app's users
// (devices, as UserDevices resolved them) and hands it on as PushDevices
// does: the same durable promise, order and recovery per device. The
// answer lists every device with its user and status, and a user with no
// device once, rejected with no_devices; a device listed under two users
// is pushed once, under the first.
func (n *Node) PushUsers(ctx context.Context, app string, msg streams.Message, users []string, devices [][]string) (*api.PushResponse, error) {
	if n.durable == nil {
		return nil, ErrNoStore
	}
	resp := &api.PushResponse{ID: msg.ID}
	var keys []string
	var index []int
	seen := map[string]bool{}
	for i, u := range users {
		if len(devices[i]) == 0 {
			resp.Results = append(resp.Results, api.PushResult{User: u, Status: api.StatusRejected, Reason: "no_devices"})
			continue
		}
		for _, d := range devices[i] {
			if seen[d] {
				continue
			}
			seen[d] = true
			index = append(index, len(resp.Results))
			resp.Results = append(resp.Results, api.PushResult{User: u, Device: d})
			keys = append(keys, inboxKey(app, d))
		}
	}
	if len(keys) == 0 {
		n.countResults(resp.Results)
		return resp, nil
	}
	return n.pushKeys(ctx, resp, msg, keys, index)
}

// pushKeys stores msg in the inboxes keys name (resp.Results[index[k]] is
// keys[k]'s result) and hands it to the nodes holding their sessions.
func (n *Node) pushKeys(ctx context.Context, resp *api.PushResponse, msg streams.Message, keys []string, index []int) (*api.PushResponse, error) {
	if n.durable == nil {
		return n.pushUnstored(resp, msg, keys, index)
	}
	sctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	appended, err := n.durable.store.Append(sctx, msg, keys)
	n.durable.result(err)
	if err != nil {
		n.log.Warn("push not stored: delivering to local sessions only", "msg_id", msg.ID, "err", err)
		return n.pushUnstored(resp, msg, keys, index)
	}
	resp.Stored = true
	em := entryMessage{id: msg.ID, business: msg.Business, priority: wire.Priority(msg.Priority),
		created: uint64(msg.Created.UnixMilli()), payload: msg.Payload}
	var local []entryTarget
	var localAt []int
	remote := map[string][]entryTarget{}
	remoteAt := map[string][]int{}
	for k, a := range appended {
		res := &resp.Results[index[k]]
		res.Seq, res.Duplicate, res.Status = a.Seq, a.Duplicate, api.StatusStored
		n.trace.stored(msg.ID, keys[k], a.Seq, a.Route.Node, a.Duplicate)
		t := entryTarget{device: keys[k], connEpoch: a.Route.Epoch, inboxEpoch: a.Epoch, seq: a.Seq}
		switch a.Route.Node {
		case "":
		case n.cfg.NodeID:
			local, localAt = append(local, t), append(localAt, index[k])
		default:
			remote[a.Route.Node] = append(remote[a.Route.Node], t)
			remoteAt[a.Route.Node] = append(remoteAt[a.Route.Node], index[k])
		}
	}
	if len(remote) > 0 {
		entries := make(map[string][][]byte, len(remote))
		for node, ts := range remote {
			entries[node] = [][]byte{appendPushEntry(nil, &em, ts)}
		}
		sent := time.Now()
		err := n.durable.store.Deliver(sctx, entries)
		n.durable.result(err)
		for node, ts := range remote {
			n.trace.routed(sent, msg.ID, node, len(ts), err)
		}
		if err != nil {
			// Stored but not passed on: the device's node reads the inbox
			// when the next message shows it a gap, or on reconnect.
			n.metrics.entryErrors.Inc()
		} else {
			for _, at := range remoteAt {
				for _, i := range at {
					resp.Results[i].Status = api.StatusDelivered
				}
			}
		}
	}
	for k, took := range n.deliverTargets(&em, local, viaLive) {
		if took {
			resp.Results[localAt[k]].Status = api.StatusDelivered
		}
	}
	n.countResults(resp.Results)
	return resp, nil
}

// pushUnstored delivers msg at most once to the targets connected to this
// node, when there is no Store or Redis failed: never a false stored.
func (n *Node) pushUnstored(resp *api.PushResponse, msg streams.Message, keys []string, index []int) (*api.PushResponse, error) {
	p := wire.Push{ID: msg.ID, Business: msg.Business, Priority: wire.Priority(msg.Priority),
		Created: uint64(msg.Created.UnixMilli()), Payload: msg.Payload}
	frame := wire.AppendPush(nil, &p)
	delivered := 0
	for k, key := range keys {
		res := &resp.Results[index[k]]
		if s := n.hub.lookup(key); s != nil && s.takes(msg.Business) && s.sendEphemeral(frame) {
			res.Status = api.StatusDelivered
			delivered++
			n.trace.notStored(msg.ID, key, true)
		} else {
			res.Status, res.Reason = api.StatusRejected, "unavailable"
			n.trace.notStored(msg.ID, key, false)
		}
	}
	n.countResults(resp.Results)
	if delivered == 0 && len(keys) > 0 {
		return nil, ErrUnavailable
	}
	return resp, nil
}

func (n *Node) countResults(results []api.PushResult) {
	for _, r := range results {
		n.metrics.pushes.WithLabelValues(r.Status).Inc()
	}
}

// PushGroup hands msg to every connected member of app's group, or of the
// whole app when group is "" (a broadcast), across the region: encoded
// once, fanned out here, and written to every other live node's delivery
// stream. Only the members that take the message's business and that
// filter (nil: every member) admits get it. A group that keeps a catch-up
// stream gets the message appended to it once, and the answer says it is
// stored there (Stored, GroupEpoch, GroupSeq); otherwise, and while Redis
// is unreachable, the message reaches the members connected at that
// moment, at most once.
func (n *Node) PushGroup(ctx context.Context, app, group string, msg streams.Message, filter *Filter) *api.PushResponse {
	key := broadcastGroup(app)
	if group != "" {
		key = groupKey(app, group)
	}
	resp := &api.PushResponse{ID: msg.ID}
	var sctx context.Context
	if n.durable != nil {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, redisTimeout)
		defer cancel()
	}
	if group != "" && n.durable != nil {
		epoch, seq, err := n.durable.store.AppendGroup(sctx, key, streams.GroupMessage{ID: msg.ID, Business: msg.Business,
			Priority: msg.Priority, Created: msg.Created, Payload: msg.Payload, Filter: filter.encoded()})
		n.durable.result(err)
		if err != nil {
			n.log.Warn("group push not stored in its catch-up stream: delivering to the members connected now only", "id", msg.ID, "group", key, "err", err)
		}
		resp.Stored, resp.GroupEpoch, resp.GroupSeq = epoch != "", epoch, seq
	}
	p := wire.Push{ID: msg.ID, Business: msg.Business, Priority: wire.Priority(msg.Priority),
		Created: uint64(msg.Created.UnixMilli()), Group: group, Payload: msg.Payload,
		GroupEpoch: resp.GroupEpoch, GroupSeq: resp.GroupSeq}
	frame := wire.AppendPush(nil, &p)
	aud := audience{business: msg.Business, filter: filter}
	recipients := n.fanoutLocal(msg.ID, frame, key, aud)
	others := 0
	if n.durable != nil {
		// The live nodes as of the last heartbeat (a second ago at most):
		// one that joined since misses this message live; a member of a
		// group with a stream gets it when it next catches up.
		entries := map[string][][]byte{}
		if live := n.liveNodes.Load(); live != nil {
			entry := appendFanoutEntry(nil, key, frame, aud)
			for _, node := range *live {
				if node.ID != n.cfg.NodeID {
					entries[node.ID] = [][]byte{entry}
				}
			}
		}
		if len(entries) > 0 {
			sent := time.Now()
			err := n.durable.store.Deliver(sctx, entries)
			n.durable.result(err)
			for node := range entries {
				n.trace.routed(sent, msg.ID, node, 0, err)
			}
			if err == nil {
				others = len(entries)
			}
		}
	}
	resp.Recipients, resp.OtherNodes = &recipients, &others
	return resp
}

// fanoutLocal hands one encoded frame of message id to the local members
// of a group key in the audience, merged with the fan-outs of that
// audience queued behind a running one (fanoutLines), and returns how many
// took it.
func (n *Node) fanoutLocal(id string, frame []byte, group string, aud audience) int {
	return n.fanouts.fanout(id, frame, group, aud, n.fanoutRound)
}

// handFanout is fanoutLocal for the delivery loop, which needs no count:
// it does not wait for a round queued behind a running one.
func (n *Node) handFanout(id string, frame []byte, group string, aud audience) {
	n.fanouts.hand(id, frame, group, aud, n.fanoutRound)
}

// fanoutRound hands frames, one per message of ids, to the local members
// of a group key in the audience, and records in each message's trace how
// many took it.
func (n *Node) fanoutRound(frames []byte, ids []string, group string, aud audience) int {
	start := time.Now()
	k := n.hub.fanout(frames, len(ids), group, aud)
	n.metrics.fanout.Observe(time.Since(start).Seconds())
	n.metrics.fanoutSends.Add(float64(k * len(ids)))
	n.metrics.framesOut[frames[1]].Add(float64(k * len(ids)))
	for _, id := range ids {
		n.trace.fanout(id, group, k)
	}
	return k
}

// DeviceState reads one of app's devices' route and inbox. It fails with
// ErrUnavailable while the store is unreachable.
func (n *Node) DeviceState(ctx context.Context, app, device string) (api.DeviceState, error) {
	key := inboxKey(app, device)
	out := api.DeviceState{App: app, Device: device, Online: n.hub.lookup(key) != nil}
	if n.durable == nil {
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	info, err := n.durable.store.Device(ctx, key)
	n.durable.result(err)
	if err != nil {
		return out, ErrUnavailable
	}
	out.Epoch, out.Last, out.Acked, out.Lost, out.InboxLen = info.Epoch, info.Last, info.Acked, info.Lost, info.InboxLen
	if info.Route.Node != "" {
		out.Online = true
		out.Route = &api.DeviceRoute{Node: info.Route.Node, Epoch: info.Route.Epoch}
	}
	return out, nil
}

// Tunables returns the delivery settings in force on this node: its
// configuration with the region's tunables over it.
func (n *Node) Tunables() api.Tunables {
	t := n.tun.Load()
	return api.Tunables{InboxMaxLen: t.inboxMaxLen, InboxTTL: t.maxTTL.String(),
		AckTimeout: t.ackTimeout.String(), AckBackoffMax: t.ackBackoffMax.String(),
		InFlightWindow: t.window, QueueFrames: t.queueFrames, QueueBytes: t.queueBytes}
}

// LiveNodes are the ids of the region's nodes this node took for alive at
// its last heartbeat (a second ago at most), itself included: the nodes
// a group push is handed to. Empty without a Store.
func (n *Node) LiveNodes() []string {
	live := n.liveNodes.Load()
	if live == nil {
		return nil
	}
	ids := make([]string, len(*live))
	for i, info := range *live {
		ids[i] = info.ID
	}
	return ids
}

// Sessions is the number of device sessions open on this node.
func (n *Node) Sessions() int64 { return n.hub.count.Load() }

// Counters returns the node's running totals since it started.
func (n *Node) Counters() api.NodeCounters { return n.metrics.counters() }

// Refusing says why the node takes no new devices right now: "starting",
// "draining", "stopping" or "full"; "" while it takes them.
func (n *Node) Refusing() string { return n.refusal() }

// RedisUp reports whether the node's last Redis call reached Redis (true
// without a Store).
func (n *Node) RedisUp() bool { return n.durable == nil || n.durable.up.Load() }

// RedisTopology reads the region's Redis as this node reaches it (nil
// without a Store). When Redis cannot be read, the answer holds the
// node's configuration and Error.
func (n *Node) RedisTopology(ctx context.Context) *api.RedisTopology {
	if n.durable == nil {
		return nil
	}
	out := &api.RedisTopology{Topology: n.cfg.RedisTopology, Durability: n.cfg.Durability, Primaries: []api.RedisPrimary{}}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	t, err := n.durable.store.Topology(ctx)
	n.durable.result(err)
	out.WaitReplicas, out.WaitTimeout = t.WaitReplicas, t.WaitTimeout.String()
	if err != nil {
		out.Error = err.Error()
		return out
	}
	for _, p := range t.Primaries {
		ap := api.RedisPrimary{Addr: p.Addr, Role: p.Role, Slots: p.Slots, AppendFsync: p.AppendFsync,
			CPUSeconds: p.CPU.Seconds(), Replicas: []api.RedisReplica{}}
		for _, r := range p.Replicas {
			ap.Replicas = append(ap.Replicas, api.RedisReplica{Addr: r.Addr, State: r.State,
				LagSeconds: int64(r.Lag / time.Second), BehindBytes: r.Behind})
		}
		out.Primaries = append(out.Primaries, ap)
	}
	return out
}

// Config returns the node's configuration, defaults applied.
func (n *Node) Config() Config { return n.cfg }

// Registry is where the node registers its metrics; front-ends register
// theirs there too, so /metrics serves them all.
func (n *Node) Registry() *prometheus.Registry { return n.reg }
