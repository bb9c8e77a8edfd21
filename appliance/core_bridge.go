package appliance

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/streams"
)

// The core's side of the bridge between regions (appliance/bridge): the
// region's name, the apps an imported message may be for, and Import, the
// one hand-off of a message that arrived from another region. Like the
// rest of the core it knows nothing of Kafka.

// Region is the name of the node's region (Config.Region).
func (n *Node) Region() string { return n.cfg.Region }

// LookupApp returns the app id as of the node's app table, without a key:
// an imported message names its app, and this region must have one by
// that id to deliver it.
func (n *Node) LookupApp(id string) (App, bool) {
	if e := n.apps.Load().apps[id]; e != nil {
		return App{e: e}, true
	}
	return App{}, false
}

// TargetKind is what a push is addressed to.
type TargetKind uint8

// Target kinds. A new kind is a new constant, a name here, and a case in
// Import.
const (
	// TargetDevices: devices by id; stored in each device's inbox.
	TargetDevices TargetKind = iota + 1
	// TargetGroup: the members of one group, as PushGroup reaches them.
	TargetGroup
	// TargetBroadcast: every connected device of the app; not stored.
	TargetBroadcast
	// TargetUsers: users by id; stored in the inbox of each of their
	// devices that the importing region knows (its own user index).
	TargetUsers
)

var targetKindNames = map[TargetKind]string{
	TargetDevices:   "devices",
	TargetGroup:     "group",
	TargetBroadcast: "broadcast",
	TargetUsers:     "users",
}

// String is the kind's name, as the bridge's records carry it.
func (k TargetKind) String() string {
	if s, ok := targetKindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("TargetKind(%d)", uint8(k))
}

// ParseTargetKind reads a kind's name.
func ParseTargetKind(s string) (TargetKind, bool) {
	for k, name := range targetKindNames {
		if name == s {
			return k, true
		}
	}
	return 0, false
}

// Import is a message another region's push API accepted for this region,
// as the bridge hands it over.
type Import struct {
	// App is the app the message is for; the caller checked it exists
	// here (LookupApp).
	App  string
	Kind TargetKind
	// Targets are the device ids (TargetDevices), the user ids
	// (TargetUsers) or the one group name (TargetGroup); none for a
	// broadcast.
	Targets []string
	// Filter narrows a group or broadcast message to the sessions it
	// admits, as in PushGroup; nil admits every session.
	Filter *Filter
	// Msg is the message under its origin id, creation time and TTL;
	// MaxLen is this region's inbox cap.
	Msg streams.Message
}

// ImportResult says what Import did with one message.
type ImportResult struct {
	// Stored is the devices whose inbox took the message, Duplicates
	// those of them that had it already (a record delivered twice, or a
	// retry of an idempotent push). Device and user imports only.
	Stored, Duplicates int
	// Recipients is the sessions on this node handed a group or
	// broadcast message; Repeat says it had been imported before and was
	// not fanned out again.
	Recipients int
	Repeat     bool
	// Err says why the message was refused, on its own, with nothing
	// stored: it expired before it got here (streams.ErrExpired), or it
	// cannot be stored (streams.ErrInvalidArgument). Drop it.
	Err error
}

// importOnceSlack keeps a group or broadcast message's import mark a
// little past its TTL, so a record redelivered right at its expiry is
// still recognised.
const importOnceSlack = time.Minute

// Import delivers messages from other regions through the same durable
// path as local pushes, and never exports them again (the push API's
// regions are not involved). Devices: every message is stored in its
// devices' inboxes, all of them in one round trip to Redis and in the
// order given (so a device's messages keep their order), each inbox
// deduping by message id, so importing a record twice stores it once;
// then they are handed to the nodes holding the devices' sessions. Users:
// resolved to their devices through this region's user index (one round
// trip for the batch), then stored as devices are. Group and broadcast:
// pushed across this region as PushGroup does (a group's catch-up stream
// included) at most once per message id (a Redis mark, MarkOnce). Results
// are in the order of imps. It fails with ErrUnavailable when the store
// cannot be reached: nothing is delivered, some messages may be stored;
// import them all again.
func (n *Node) Import(ctx context.Context, imps []Import) ([]ImportResult, error) {
	res := make([]ImportResult, len(imps))
	var devices, users []int // indexes in imps of the device and user imports
	for i, imp := range imps {
		switch imp.Kind {
		case TargetDevices:
			devices = append(devices, i)
		case TargetUsers:
			users = append(users, i)
		case TargetGroup, TargetBroadcast:
		default:
			res[i].Err = fmt.Errorf("import %s: unknown target kind %d", imp.Msg.ID, imp.Kind)
		}
	}
	if len(users) > 0 {
		resolved, err := n.importUsers(ctx, imps, users, res)
		if err != nil {
			return nil, err
		}
		imps = resolved
		for _, i := range users {
			if res[i].Err == nil {
				devices = append(devices, i)
			}
		}
		// The batch's order, for each device's messages to keep theirs.
		slices.Sort(devices)
	}
	if err := n.importDevices(ctx, imps, devices, res); err != nil {
		return nil, err
	}
	for i, imp := range imps {
		if imp.Kind != TargetGroup && imp.Kind != TargetBroadcast {
			continue
		}
		if err := n.importGroup(ctx, imp, &res[i]); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// importUsers resolves the user imports imps[at...] to the devices this
// region's user index has for them, in one round trip: it returns a copy
// of imps where they name those devices (a device under two of a
// message's users once). Without a store they fail on their own: users
// live in the region's Redis.
func (n *Node) importUsers(ctx context.Context, imps []Import, at []int, res []ImportResult) ([]Import, error) {
	if n.durable == nil {
		for _, i := range at {
			res[i].Err = fmt.Errorf("import %s: %w", imps[i].Msg.ID, ErrNoStore)
		}
		return imps, nil
	}
	var keys []string
	for _, i := range at {
		for _, u := range imps[i].Targets {
			keys = append(keys, inboxKey(imps[i].App, u))
		}
	}
	sctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	got, err := n.durable.store.UserDevices(sctx, keys)
	n.durable.result(err)
	if err != nil {
		return nil, fmt.Errorf("%w: import users of %d messages: %w", ErrUnavailable, len(at), err)
	}
	out := slices.Clone(imps)
	k := 0
	for _, i := range at {
		var devices []string
		for range imps[i].Targets {
			for _, d := range got[k] {
				if d = strings.TrimPrefix(d, imps[i].App+"/"); !slices.Contains(devices, d) {
					devices = append(devices, d)
				}
			}
			k++
		}
		out[i].Targets = devices
	}
	return out, nil
}

// importDevices stores and routes the device imports imps[at...].
func (n *Node) importDevices(ctx context.Context, imps []Import, at []int, res []ImportResult) error {
	if len(at) == 0 {
		return nil
	}
	keys := make([][]string, len(at))
	for k, i := range at {
		for _, d := range imps[i].Targets {
			if token.ValidID(d) {
				keys[k] = append(keys[k], inboxKey(imps[i].App, d))
			}
		}
	}
	if n.durable == nil {
		// No store (a node of tests and sinks): what the push API does,
		// at most once to the sessions here.
		for _, i := range at {
			if resp, err := n.PushDevices(ctx, imps[i].App, imps[i].Msg, imps[i].Targets); err == nil {
				res[i].Stored = len(resp.Results)
			}
		}
		return nil
	}
	reqs := make([]streams.AppendRequest, len(at))
	for k, i := range at {
		reqs[k] = streams.AppendRequest{Msg: imps[i].Msg, Devices: keys[k]}
	}
	sctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	appended, err := n.durable.store.AppendMany(sctx, reqs)
	n.durable.result(err)
	if err != nil {
		return fmt.Errorf("%w: import %d messages: %w", ErrUnavailable, len(at), err)
	}
	entries := map[string][][]byte{}
	type local struct {
		msg     entryMessage
		targets []entryTarget
	}
	var locals []local
	for k, i := range at {
		if res[i].Err = appended[k].Err; res[i].Err != nil {
			continue
		}
		msg := imps[i].Msg
		em := entryMessage{id: msg.ID, business: msg.Business, priority: wire.Priority(msg.Priority),
			created: uint64(msg.Created.UnixMilli()), payload: msg.Payload}
		l := local{msg: em}
		remote := map[string][]entryTarget{}
		for j, a := range appended[k].Appended {
			res[i].Stored++
			if a.Duplicate {
				res[i].Duplicates++
			}
			t := entryTarget{device: keys[k][j], connEpoch: a.Route.Epoch, inboxEpoch: a.Epoch, seq: a.Seq}
			switch a.Route.Node {
			case "":
			case n.cfg.NodeID:
				l.targets = append(l.targets, t)
			default:
				remote[a.Route.Node] = append(remote[a.Route.Node], t)
			}
		}
		for node, ts := range remote {
			entries[node] = append(entries[node], appendPushEntry(nil, &em, ts))
		}
		if len(l.targets) > 0 {
			locals = append(locals, l)
		}
	}
	if len(entries) > 0 {
		// One pipeline for every message: each node's stream gets them in
		// order. Stored but not passed on when it fails: the device's
		// node reads the inbox when a later message shows it a gap, or on
		// reconnect.
		err := n.durable.store.Deliver(sctx, entries)
		n.durable.result(err)
		if err != nil {
			n.metrics.entryErrors.Inc()
		}
	}
	for _, l := range locals {
		n.deliverTargets(&l.msg, l.targets, viaLive)
	}
	return nil
}

// importGroup fans out one group or broadcast import, once per id.
func (n *Node) importGroup(ctx context.Context, imp Import, res *ImportResult) error {
	group := ""
	if imp.Kind == TargetGroup {
		if len(imp.Targets) != 1 {
			res.Err = fmt.Errorf("import %s: a group message names one group, not %d", imp.Msg.ID, len(imp.Targets))
			return nil
		}
		group = imp.Targets[0]
	}
	if n.durable != nil {
		ttl := max(time.Until(imp.Msg.Created.Add(imp.Msg.TTL)), 0) + importOnceSlack
		sctx, cancel := context.WithTimeout(ctx, redisTimeout)
		first, err := n.durable.store.MarkOnce(sctx, "bridge:"+imp.Msg.ID, ttl)
		cancel()
		n.durable.result(err)
		if err != nil {
			return fmt.Errorf("%w: import %s: %w", ErrUnavailable, imp.Msg.ID, err)
		}
		if !first {
			res.Repeat = true
			return nil
		}
	}
	resp := n.PushGroup(ctx, imp.App, group, imp.Msg, imp.Filter)
	res.Recipients = *resp.Recipients
	return nil
}
