package appliance

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/streams"
)

// Groups as the node holds them: a group's members are kept in Redis by
// the business (ChangeGroupMembers), per device and per user, and each
// node mirrors them in its hub for the sessions it holds. A session joins
// its device's and its user's groups when it opens (the open reads them
// in its one round trip), and the node holding a member's session is told
// of every later change by a delivery entry (entryMember). Devices of
// apps that allow it also JOIN and LEAVE groups themselves, for the
// connection only.

// memberVia says how a session is in a group: through its device's
// membership or its user's (both kept in Redis by the business, through
// the push API), or through the device's own JOIN.
type memberVia uint8

const (
	viaDevice memberVia = 1 << iota
	viaUser
	viaJoin
)

// membership is one group a session is in.
type membership struct {
	key string // group key (groupKey)
	via memberVia
}

// Bounds of the group API.
const (
	// MaxStreamLen and MaxStreamAge bound a group's catch-up stream.
	MaxStreamLen = 1000
	MaxStreamAge = 24 * time.Hour
	// maxGroupPage bounds a page of members; defaultGroupPage is a page
	// when the caller names no count.
	maxGroupPage     = 1000
	defaultGroupPage = 100
)

// ErrNoStore is returned by the core's group and user operations on a
// node without a Store: groups and users live in the region's Redis.
var ErrNoStore = errors.New("groups and users need the region's store; this node has none")

// joinStored makes s a member of the groups (group keys) its device or
// user belongs to, as its open read them, and has it catch up in each it
// was not in yet.
func (n *Node) joinStored(s *session, groups []string, via memberVia) {
	for _, g := range groups {
		if ok, added := n.hub.join(s, g, via, 0); ok && added {
			n.queueCatchUp(s, g)
		}
	}
}

// onGroup answers a device's JOIN or LEAVE. An app whose groups are its
// business's alone refuses both (join_refused). A JOIN of a group that
// keeps a catch-up stream catches up from the HELLO's cursor for it. A
// LEAVE drops only what JOIN added: a membership the business made stays.
func (s *session) onGroup(request uint64, group string, join bool) {
	n := s.node
	if !s.isOpen() {
		s.protocolError("JOIN or LEAVE before HELLO")
		return
	}
	app := s.appID()
	code := wire.CodeOK
	switch {
	case !token.ValidID(group):
		code = wire.CodeBadGroup
	case n.apps.Load().clientGroupsOff(app):
		code = wire.CodeJoinRefused
	case join:
		ok, added := n.hub.join(s, groupKey(app, group), viaJoin, n.cfg.MaxGroups)
		if !ok {
			code = wire.CodeTooManyGroups
		} else if added {
			defer n.queueCatchUp(s, groupKey(app, group))
		}
	default:
		n.hub.leave(s, groupKey(app, group), viaJoin)
	}
	s.send(wire.Append(nil, &wire.UpReply{Request: request, Code: code}))
}

// clientGroupsOff reports whether app refuses its devices' own JOIN and
// LEAVE.
func (t *appTable) clientGroupsOff(app string) bool {
	e := t.apps[app]
	return e != nil && e.clientGroupsOff
}

// GroupMember is a member for ChangeGroupMembers: a device or a user of
// the app, exactly one of them set.
type GroupMember struct {
	Device, User string
}

// ChangeGroupMembers adds members to app's group, or removes them, in
// Redis, and tells the nodes holding their sessions (a device's one, a
// user's every connected device), which join or leave the group at once.
// It answers per member in the order given; an id that is not valid is
// rejected on its own. It fails with ErrUnavailable while Redis is
// unreachable, including when the change is stored but the nodes could
// not be told; a failure may leave some members changed, and calling
// again with the same members finishes the change (a member already
// changed is told about again).
func (n *Node) ChangeGroupMembers(ctx context.Context, app, group string, add bool, members []GroupMember) ([]api.GroupMemberResult, error) {
	if n.durable == nil {
		return nil, ErrNoStore
	}
	out := make([]api.GroupMemberResult, len(members))
	changes := make([]streams.MemberChange, 0, len(members))
	at := make([]int, 0, len(members))
	for i, m := range members {
		r := &out[i]
		r.Device, r.User = m.Device, m.User
		id, name, isUser := m.Device, "d:"+m.Device, false
		if m.User != "" {
			id, name, isUser = m.User, "u:"+m.User, true
		}
		if !token.ValidID(id) || (m.Device != "") == (m.User != "") {
			r.Status, r.Reason = api.MemberRejected, "invalid_id"
			continue
		}
		changes = append(changes, streams.MemberChange{Name: name, Key: inboxKey(app, id), User: isUser})
		at = append(at, i)
	}
	if len(changes) == 0 {
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	key := groupKey(app, group)
	res, err := n.durable.store.ChangeMembers(ctx, key, add, changes)
	n.durable.result(err)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	// Where the members' sessions are: a device's route came with the
	// change; a user's devices need their routes read.
	type target struct {
		member int // index in out
		device string
		route  streams.Route
	}
	var targets []target
	var userDevices []string
	var userOf []int
	for k, r := range res {
		i := at[k]
		switch r.Status {
		case streams.MemberGroupFull:
			out[i].Status, out[i].Reason = api.MemberRejected, "group_full"
			continue
		case streams.MemberTooManyGroups:
			out[i].Status, out[i].Reason = api.MemberRejected, "too_many_groups"
			continue
		case streams.MemberChanged:
			out[i].Status = map[bool]string{true: api.MemberAdded, false: api.MemberRemoved}[add]
		default:
			out[i].Status = map[bool]string{true: api.MemberAlready, false: api.MemberNotMember}[add]
		}
		if changes[k].User {
			userDevices = append(userDevices, r.Devices...)
			for range r.Devices {
				userOf = append(userOf, i)
			}
		} else if r.Route.Node != "" {
			targets = append(targets, target{member: i, device: changes[k].Key, route: r.Route})
		}
	}
	if len(userDevices) > 0 {
		routes, err := n.durable.store.Routes(ctx, userDevices)
		n.durable.result(err)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		for j, r := range routes {
			if r.Node != "" {
				targets = append(targets, target{member: userOf[j], device: userDevices[j], route: r})
			}
		}
	}
	entries := map[string][][]byte{}
	for _, t := range targets {
		via := viaDevice
		if members[t.member].User != "" {
			via = viaUser
		}
		out[t.member].Sessions++
		if t.route.Node == n.cfg.NodeID {
			n.applyMember(t.device, t.route.Epoch, key, via, add)
			continue
		}
		entries[t.route.Node] = append(entries[t.route.Node], appendMemberEntry(nil, t.device, t.route.Epoch, key, via, add))
	}
	if len(entries) > 0 {
		last, err := n.durable.store.DeliverIDs(ctx, entries)
		n.durable.result(err)
		if err != nil {
			// The change is in Redis, but the sessions elsewhere were
			// not told: a 200 would promise what they do not do. A
			// retry finds the members changed already and tells them.
			n.metrics.entryErrors.Add(float64(len(entries)))
			return nil, fmt.Errorf("%w: telling the members' nodes: %w", ErrUnavailable, err)
		}
		if err := n.durable.awaitDelivered(ctx, last); err != nil {
			return nil, fmt.Errorf("%w: waiting for the members' nodes: %w", ErrUnavailable, err)
		}
	}
	return out, nil
}

// awaitDelivered waits until every live node of last has applied its
// delivery stream up to the entry id last names: a group push made after
// the change is acknowledged, through any node, then finds the members'
// sessions in the group, since that node fans it out to them only after
// it applied their member entries. A node that is not live is skipped:
// its sessions are gone, and a live node takes its stream over.
func (d *durable) awaitDelivered(ctx context.Context, last map[string]string) error {
	live := map[string]bool{}
	if l := d.node.liveNodes.Load(); l != nil {
		for _, info := range *l {
			live[info.ID] = true
		}
	}
	for node, id := range last {
		wait := time.Millisecond
		for live[node] {
			ok, err := d.store.Delivered(ctx, node, id)
			d.result(err)
			if err != nil {
				return err
			}
			if ok {
				break
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			wait = min(2*wait, 20*time.Millisecond)
		}
	}
	return nil
}

// memberChange is a membership change for the session of one device
// whose route the change saw (connection epoch), as a member entry
// carries it.
type memberChange struct {
	connEpoch uint64
	group     string
	via       memberVia
	join      bool
}

// openingDevice holds the membership changes that reach a device while
// opens of it are in flight (opens of them).
type openingDevice struct {
	opens   int
	changes []memberChange
}

// applyMember mirrors a membership change on the session of device whose
// route the change saw (connection epoch): an older session is on its way
// out, and a newer one read its groups after the change when it opened.
// While an open of the device is in flight the change waits for it
// (endOpen): a change that landed after the open read the device's groups
// names the new connection before its session is in the hub, and one
// applied before the open joins what it read would be undone by it.
func (n *Node) applyMember(device string, connEpoch uint64, group string, via memberVia, join bool) {
	c := memberChange{connEpoch: connEpoch, group: group, via: via, join: join}
	if !n.durable.holdMember(device, c) {
		n.applyMemberNow(device, c)
	}
}

// applyMemberNow applies c to the device's registered session, if it is
// the connection c names.
func (n *Node) applyMemberNow(device string, c memberChange) {
	s := n.hub.lookup(device)
	if s == nil {
		return
	}
	s.mu.Lock()
	same := s.connEpoch == c.connEpoch
	s.mu.Unlock()
	if same {
		n.changeMembership(s, c)
	}
}

// changeMembership has s join or leave c's group, and catch up in a
// group it joins.
func (n *Node) changeMembership(s *session, c memberChange) {
	if !c.join {
		n.hub.leave(s, c.group, c.via)
		return
	}
	if ok, added := n.hub.join(s, c.group, c.via, 0); ok && added {
		n.queueCatchUp(s, c.group)
	}
}

// beginOpen makes membership changes of device wait, from before its
// route is claimed, until endOpen.
func (d *durable) beginOpen(device string) {
	d.memberMu.Lock()
	o := d.opening[device]
	if o == nil {
		o = &openingDevice{}
		d.opening[device] = o
	}
	o.opens++
	d.memberMu.Unlock()
}

// holdMember keeps c for an open of device in flight, and reports
// whether there was one.
func (d *durable) holdMember(device string, c memberChange) bool {
	d.memberMu.Lock()
	defer d.memberMu.Unlock()
	o := d.opening[device]
	if o == nil {
		return false
	}
	o.changes = append(o.changes, c)
	return true
}

// endOpen ends an open of device that beginOpen started. When the open
// joined s (connection epoch connEpoch) to the groups it read, the
// changes held for that connection are applied to s, in the order they
// came, those arriving meanwhile included; every change is idempotent,
// so one the open read already changes nothing. The last open of the
// device in flight applies what is left (changes for an older
// connection) as they would have been without it.
func (d *durable) endOpen(device string, s *session, connEpoch uint64, joined bool) {
	n := d.node
	for {
		var mine, rest []memberChange
		d.memberMu.Lock()
		o := d.opening[device]
		if joined {
			keep := o.changes[:0]
			for _, c := range o.changes {
				if c.connEpoch == connEpoch {
					mine = append(mine, c)
				} else {
					keep = append(keep, c)
				}
			}
			o.changes = keep
		}
		if len(mine) == 0 {
			if o.opens--; o.opens == 0 {
				rest = o.changes
				delete(d.opening, device)
			}
		}
		d.memberMu.Unlock()
		for _, c := range mine {
			n.changeMembership(s, c)
		}
		if len(mine) == 0 {
			for _, c := range rest {
				n.applyMemberNow(device, c)
			}
			return
		}
	}
}

// GroupState reads app's group: its size, a page of about count members
// (0: 100; at most 1,000) from cursor ("" for the first), and its
// catch-up stream.
func (n *Node) GroupState(ctx context.Context, app, group, cursor string, count int) (api.GroupState, error) {
	out := api.GroupState{App: app, Group: group, Members: []api.GroupMember{}}
	if n.durable == nil {
		return out, ErrNoStore
	}
	var from uint64
	if cursor != "" {
		var err error
		if from, err = strconv.ParseUint(cursor, 10, 64); err != nil {
			return out, fmt.Errorf("%w: cursor %q is not one this API gave", ErrInvalidArgument, cursor)
		}
	}
	if count <= 0 {
		count = defaultGroupPage
	}
	count = min(count, maxGroupPage)
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	info, err := n.durable.store.Group(ctx, groupKey(app, group), from, count)
	n.durable.result(err)
	if err != nil {
		return out, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	out.Size = info.Size
	for _, m := range info.Members {
		switch {
		case strings.HasPrefix(m, "d:"):
			out.Members = append(out.Members, api.GroupMember{Device: m[2:]})
		case strings.HasPrefix(m, "u:"):
			out.Members = append(out.Members, api.GroupMember{User: m[2:]})
		}
	}
	if info.Next != 0 {
		out.NextCursor = strconv.FormatUint(info.Next, 10)
	}
	out.Stream = apiStream(info.Stream)
	return out, nil
}

// ErrInvalidArgument means a request's value is out of range; its text
// says which.
var ErrInvalidArgument = errors.New("invalid argument")

// SetGroupStream makes app's group keep a catch-up stream of at most
// maxLen messages (1 to MaxStreamLen), each at most maxAge (1 s to
// MaxStreamAge), or none when maxLen is 0.
func (n *Node) SetGroupStream(ctx context.Context, app, group string, maxLen int64, maxAge time.Duration) (api.GroupStream, error) {
	if n.durable == nil {
		return api.GroupStream{}, ErrNoStore
	}
	switch {
	case maxLen < 0 || maxLen > MaxStreamLen:
		return api.GroupStream{}, fmt.Errorf("%w: max_len %d: 0 (off) to %d", ErrInvalidArgument, maxLen, MaxStreamLen)
	case maxLen > 0 && (maxAge < time.Second || maxAge > MaxStreamAge):
		return api.GroupStream{}, fmt.Errorf("%w: max_age %s: 1s to %s", ErrInvalidArgument, maxAge, MaxStreamAge)
	}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	st, err := n.durable.store.SetGroupStream(ctx, groupKey(app, group), maxLen, maxAge)
	n.durable.result(err)
	if err != nil {
		return api.GroupStream{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return apiStream(st), nil
}

func apiStream(st streams.GroupStream) api.GroupStream {
	if st.MaxLen == 0 {
		return api.GroupStream{}
	}
	return api.GroupStream{MaxLen: st.MaxLen, MaxAge: st.MaxAge.String(), Epoch: st.Epoch, Last: st.Last, Trimmed: st.Trimmed}
}

// UserState reads app's user: the devices a push to it reaches (online or
// not, and where), and its groups.
func (n *Node) UserState(ctx context.Context, app, user string) (api.UserState, error) {
	out := api.UserState{App: app, User: user, Devices: []api.UserDevice{}, Groups: []string{}}
	if n.durable == nil {
		return out, ErrNoStore
	}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	info, err := n.durable.store.User(ctx, inboxKey(app, user))
	n.durable.result(err)
	if err != nil {
		return out, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	keys := make([]string, len(info.Devices))
	for i, d := range info.Devices {
		keys[i] = d.Device
	}
	routes, err := n.durable.store.Routes(ctx, keys)
	n.durable.result(err)
	if err != nil {
		return out, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	for i, d := range info.Devices {
		ud := api.UserDevice{Device: strings.TrimPrefix(d.Device, app+"/"), LastSeen: d.LastSeen.UTC()}
		if r := routes[i]; r.Node != "" {
			ud.Online, ud.Route = true, &api.DeviceRoute{Node: r.Node, Epoch: r.Epoch}
		}
		out.Devices = append(out.Devices, ud)
	}
	for _, g := range info.Groups {
		out.Groups = append(out.Groups, strings.TrimPrefix(g, app+"/"))
	}
	return out, nil
}
