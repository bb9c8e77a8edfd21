package appliance

import (
	"context"
	"fmt"
	"time"

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
		return App{e}, true
	}
	return App{}, false
}

// TargetKind is what a push is addressed to.
type TargetKind uint8

// Target kinds. A new kind (users, say) is a new constant, a name here,
// and a case in Import.
const (
	// TargetDevices: devices by id; stored in each device's inbox.
	TargetDevices TargetKind = iota + 1
	// TargetGroup: the connected members of one group; not stored.
	TargetGroup
	// TargetBroadcast: every connected device of the app; not stored.
	TargetBroadcast
)

var targetKindNames = map[TargetKind]string{
	TargetDevices:   "devices",
	TargetGroup:     "group",
	TargetBroadcast: "broadcast",
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
	// Targets are the device ids (TargetDevices) or the one group name
	// (TargetGroup); none for a broadcast.
	Targets []string
	// Msg is the message under its origin id, creation time and TTL;
	// MaxLen is this region's inbox cap.
	Msg streams.Message
}

// ImportResult says what Import did.
type ImportResult struct {
	// Stored is the devices whose inbox took the message, Duplicates
	// those of them that had it already (a record delivered twice, or a
	// retry of an idempotent push). Device imports only.
	Stored, Duplicates int
	// Recipients is the sessions on this node handed a group or
	// broadcast message; Repeat says it had been imported before and was
	// not fanned out again.
	Recipients int
	Repeat     bool
}

// importOnceSlack keeps a group or broadcast message's import mark a
// little past its TTL, so a record redelivered right at its expiry is
// still recognised.
const importOnceSlack = time.Minute

// Import delivers a message from another region through the same durable
// path as a local push, and never exports it again (the push API's
// regions are not involved). Devices: stored in each device's inbox
// (which dedupes by message id, so importing a record twice stores it
// once) and handed to the nodes holding their sessions. Group and
// broadcast: fanned out across this region at most once per message id
// (a Redis mark, MarkOnce). It fails with ErrUnavailable when the store
// cannot be reached — nothing was delivered; retry later — and with
// another error, to be dropped, when the store refuses the message (it
// expired meanwhile).
func (n *Node) Import(ctx context.Context, imp Import) (ImportResult, error) {
	var res ImportResult
	switch imp.Kind {
	case TargetDevices:
		resp, err := n.pushDevices(ctx, imp.App, imp.Msg, imp.Targets, false)
		if err != nil {
			return res, err
		}
		for _, r := range resp.Results {
			if r.Accepted() {
				res.Stored++
			}
			if r.Duplicate {
				res.Duplicates++
			}
		}
		return res, nil
	case TargetGroup, TargetBroadcast:
		group := ""
		if imp.Kind == TargetGroup {
			if len(imp.Targets) != 1 {
				return res, fmt.Errorf("import %s: a group message names one group, not %d", imp.Msg.ID, len(imp.Targets))
			}
			group = imp.Targets[0]
		}
		if n.durable != nil {
			ttl := time.Until(imp.Msg.Created.Add(imp.Msg.TTL)) + importOnceSlack
			sctx, cancel := context.WithTimeout(ctx, redisTimeout)
			first, err := n.durable.store.MarkOnce(sctx, "bridge:"+imp.Msg.ID, ttl)
			cancel()
			n.durable.result(err)
			if err != nil {
				return res, fmt.Errorf("%w: import %s: %w", ErrUnavailable, imp.Msg.ID, err)
			}
			if !first {
				res.Repeat = true
				return res, nil
			}
		}
		resp := n.PushGroup(ctx, imp.App, group, imp.Msg)
		res.Recipients = *resp.Recipients
		return res, nil
	}
	return res, fmt.Errorf("import %s: unknown target kind %d", imp.Msg.ID, imp.Kind)
}
