package appliance

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/streams"
)

// durable is the part of a node that talks to the Store: opening sessions
// against their inbox and route, the node's delivery stream, batched acks
// and inbox reads, route upkeep, heartbeats and taking over dead nodes.
// Each loop is a goroutine owned by the node; none runs on an nbio
// callback, and callbacks hand work to them without blocking.
type durable struct {
	node  *Node
	store Store
	up    atomic.Bool // the last Redis call succeeded
	since atomic.Int64

	opens chan openJob

	// Pending acks, one per device (the highest seq seen), written by the
	// ack loop in pipelines. Coalescing bounds the buffer by the number of
	// devices and keeps every ack through a Redis outage.
	ackMu   sync.Mutex
	acks    map[string]streams.AckRequest
	ackWake chan struct{}

	fetchMu   sync.Mutex
	fetchList []*session
	fetchWake chan struct{}

	releases   chan routeRelease
	releaseMu  sync.Mutex
	unreleased []routeRelease // a batch shutdown cut short, for flushDurable

	catchMu   sync.Mutex
	catchList []catchUp
	catchWake chan struct{}

	// Membership changes that reach a device while an open of it is in
	// flight wait here until the open has joined the groups it read
	// (groups.go: holdMember, endOpen).
	memberMu sync.Mutex
	opening  map[string]*openingDevice

	refreshWake chan struct{} // check every route now
	// resyncWake asks the refresh loop to check every route and then
	// bring every local session in step with its inbox: Redis lost this
	// node's heartbeat, so other nodes may have taken over its delivery
	// stream and dropped entries meant for its sessions.
	resyncWake chan struct{}
}

// routeRelease is the route of a closed session, to compare and delete.
type routeRelease struct {
	device string
	epoch  uint64
}

type openJob struct {
	s *session
	h *wire.Hello
}

const (
	// openWorkers each open a batch of up to openBatch sessions in one
	// round trip (Store.OpenMany): one session when connects are few,
	// many when a node's devices all come back at once.
	openWorkers   = 8
	openBatch     = 128
	openQueueLen  = 4096
	releaseQueue  = 1 << 16
	releaseBatch  = 512
	ackBatch      = 512
	fetchBatch    = 256
	deliveryBatch = 256
	// deliveryBlock is how long one read of the delivery stream waits for
	// entries. go-redis does not interrupt a blocked read when its context
	// is cancelled, so this also bounds how long shutdown waits for it.
	deliveryBlock = 250 * time.Millisecond
	redisTimeout  = 2 * time.Second
)

func newDurable(n *Node, st Store) *durable {
	d := &durable{
		node:        n,
		store:       st,
		opens:       make(chan openJob, openQueueLen),
		acks:        map[string]streams.AckRequest{},
		ackWake:     make(chan struct{}, 1),
		fetchWake:   make(chan struct{}, 1),
		catchWake:   make(chan struct{}, 1),
		opening:     map[string]*openingDevice{},
		releases:    make(chan routeRelease, releaseQueue),
		refreshWake: make(chan struct{}, 1),
		resyncWake:  make(chan struct{}, 1),
	}
	d.up.Store(true)
	return d
}

// start starts the loops behind the Store. It fails when the
// node's delivery stream cannot be set up.
func (d *durable) start() error {
	n := d.node
	ctx, cancel := context.WithTimeout(n.ctx, redisTimeout)
	defer cancel()
	if err := d.store.EnsureGroup(ctx, n.cfg.NodeID); err != nil {
		return err
	}
	for i := 0; i < openWorkers; i++ {
		n.goOwned(d.openLoop)
	}
	n.goOwned(d.ackLoop)
	n.goOwned(d.fetchLoop)
	n.goOwned(d.catchUpLoop)
	n.goOwned(d.releaseLoop)
	n.goOwned(d.deliveryLoop)
	n.goOwned(d.livenessLoop)
	n.goOwned(d.refreshLoop)
	return nil
}

// result records the outcome of a Redis call for /healthz and the
// pushd_redis_up gauge, logging each transition once. Only a failure to
// reach Redis (streams.ErrUnavailable) marks it down; a refused command
// is counted in pushd_redis_errors_total{kind="refused"} and says nothing
// about Redis's health.
func (d *durable) result(err error) {
	n := d.node
	if err == nil {
		if !d.up.Swap(true) {
			n.log.Info("redis reachable again")
		}
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	if !errors.Is(err, streams.ErrUnavailable) {
		n.metrics.redisErrors.WithLabelValues("refused").Inc()
		return
	}
	n.metrics.redisErrors.WithLabelValues(unavailableKind(err)).Inc()
	if d.up.Swap(false) {
		d.since.Store(time.Now().UnixNano())
		n.log.Error("redis unreachable: serving live traffic only, pushes answer stored:false or 503", "err", err)
	}
}

// unavailableKind says why Redis could not serve a call, for metrics.
func unavailableKind(err error) string {
	if errors.Is(err, streams.ErrNotReplicated) {
		return "not_replicated"
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return "timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection"
	}
	return "not_serving"
}

func (d *durable) openLoop() {
	n := d.node
	batch := make([]openJob, 0, openBatch)
	for {
		select {
		case <-n.stop:
			return
		case j := <-d.opens:
			batch = append(batch[:0], j)
		}
	gather:
		for len(batch) < openBatch {
			select {
			case j := <-d.opens:
				batch = append(batch, j)
			default:
				break gather
			}
		}
		d.openMany(batch)
		clear(batch)
	}
}

// openMany claims each device's route and resumes its inbox from its
// HELLO cursor, in one round trip for the batch (Store.OpenMany, which
// also records the device under its token's user and reads its groups),
// then sends each its WELCOME and replays what it has not acked.
func (d *durable) openMany(jobs []openJob) {
	n := d.node
	reqs := make([]streams.OpenRequest, 0, len(jobs))
	open := make([]openJob, 0, len(jobs))
	window := n.tun.Load().window
	for _, j := range jobs {
		s := j.s
		s.mu.Lock()
		key, user, closing := s.key, s.user, s.closing
		s.mu.Unlock()
		if closing {
			continue
		}
		reqs = append(reqs, streams.OpenRequest{Device: key, Node: n.cfg.NodeID,
			Pos: streams.Position{Epoch: j.h.Epoch, Seq: j.h.Seq}, Limit: window, User: user})
		open = append(open, j)
	}
	if len(reqs) == 0 {
		return
	}
	// From before the routes are claimed until each session has joined
	// the groups its open reads, membership changes of these devices are
	// held for them: one that lands after the read names the new
	// connection, whose session is not in the hub yet.
	for _, r := range reqs {
		d.beginOpen(r.Device)
	}
	ctx, cancel := context.WithTimeout(n.ctx, redisTimeout)
	defer cancel()
	res := d.store.OpenMany(ctx, reqs)
	kicks := map[string][][]byte{}
	for i, j := range open {
		o := &res[i]
		n.durable.result(o.Err)
		if o.Err == nil && o.Prev.Node != "" && o.Prev.Node != n.cfg.NodeID {
			// The device's previous connection is on another node: tell it.
			kicks[o.Prev.Node] = append(kicks[o.Prev.Node], appendKickEntry(nil, reqs[i].Device, o.Epoch))
		}
		joined := d.opened(j.s, j.h, o)
		d.endOpen(reqs[i].Device, j.s, o.Epoch, joined)
	}
	if len(kicks) > 0 {
		err := d.store.Deliver(ctx, kicks)
		n.durable.result(err)
		if err != nil {
			n.metrics.entryErrors.Add(float64(len(kicks)))
		}
	}
}

// opened finishes one session's open with its OpenMany result: WELCOME,
// its groups, the replay, the requests it sent early, its catch-ups. It
// reports whether the session opened and joined the groups the open read.
func (d *durable) opened(s *session, h *wire.Hello, o *streams.Opened) bool {
	n := d.node
	s.mu.Lock()
	key := s.key
	s.mu.Unlock()
	if o.Err != nil {
		if o.Epoch != 0 {
			// The route was claimed but the inbox could not be read: a
			// refused session must not keep it.
			n.durable.releaseRoute(key, o.Epoch)
		}
		s.refuse(wire.CodeUnavailable, "the region's store is unreachable; retry with backoff")
		return false
	}
	res := o.Resumed
	if !res.Recovered {
		n.logResumeLoss(s, h, res)
	}
	start := res.Acked
	if h.Epoch == res.Epoch && h.Seq > start && h.Seq <= res.Last {
		// The device handled more than the server saw acked: its cursor
		// is an ack.
		start = h.Seq
		n.durable.queueAck(key, res.Epoch, start)
	}
	s.mu.Lock()
	s.connEpoch = o.Epoch
	s.epoch, s.acked, s.sent = res.Epoch, start, start
	s.mu.Unlock()
	if !s.welcome(&wire.Welcome{
		Session:   s.id,
		Node:      n.cfg.NodeID,
		Heartbeat: uint64(n.cfg.HeartbeatInterval.Milliseconds()),
		Recovered: res.Recovered,
		Epoch:     res.Epoch,
		Acked:     start,
		MaxFrame:  uint64(n.cfg.MaxFrame),
		Caps:      s.caps,
	}) {
		n.durable.releaseRoute(key, o.Epoch)
		return false
	}
	n.joinStored(s, o.Groups, viaDevice)
	n.joinStored(s, o.UserGroups, viaUser)
	offers := make([]offer, 0, len(res.Entries))
	for i := range res.Entries {
		offers = append(offers, entryOffer(res.Epoch, &res.Entries[i], viaReplay))
	}
	// Read the inbox once more after registering: a push stored after the
	// resume read but passed on before the session was in the registry
	// found no session here and waits in the inbox. The read is batched
	// with other sessions' and costs one pipeline slot per connect.
	s.mu.Lock()
	s.behind = true
	s.mu.Unlock()
	s.deliver(offers)
	// Requests the device sent after HELLO waited for WELCOME.
	s.handleEarly()
	return true
}

// entryOffer encodes an inbox entry as the PUSH a session sends; via says
// which read of the inbox found it, for its trace.
func entryOffer(epoch string, e *streams.Entry, via string) offer {
	p := wire.Push{Seq: e.Seq, ID: e.ID, Business: e.Business, Priority: wire.Priority(e.Priority),
		Created: uint64(e.Created.UnixMilli()), Payload: e.Payload}
	return offer{epoch: epoch, seq: e.Seq, frame: wire.AppendPush(make([]byte, 0, wire.PushLen(&p)), &p), authoritative: true,
		priority: p.Priority, business: e.Business, id: e.ID, via: via}
}

// queueAck records a device's cumulative ack for the ack loop. A newer
// ack for the same device replaces an older one still waiting.
func (d *durable) queueAck(key, epoch string, seq uint64) {
	if d == nil {
		return
	}
	d.ackMu.Lock()
	if cur, ok := d.acks[key]; !ok || cur.Epoch != epoch || seq > cur.Seq {
		d.acks[key] = streams.AckRequest{Device: key, Epoch: epoch, Seq: seq}
	}
	d.ackMu.Unlock()
	select {
	case d.ackWake <- struct{}{}:
	default:
	}
}

// ackLoop writes pending acks to Redis in pipelines. Acks that fail are
// put back (unless a newer one arrived meanwhile) and retried after a
// pause, so Redis ends up with every device's latest ack.
func (d *durable) ackLoop() {
	n := d.node
	var batch []streams.AckRequest
	for {
		select {
		case <-n.stop:
			return
		case <-d.ackWake:
		}
		batch = d.takeAcks(batch[:0])
		if failed := n.durable.writeAcks(n.ctx, batch); len(failed) > 0 {
			n.durable.requeueAcks(failed)
			select {
			case <-n.stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
}

// takeAcks moves the pending acks into batch.
func (d *durable) takeAcks(batch []streams.AckRequest) []streams.AckRequest {
	d.ackMu.Lock()
	defer d.ackMu.Unlock()
	for _, a := range d.acks {
		batch = append(batch, a)
	}
	clear(d.acks)
	return batch
}

// writeAcks writes acks in pipelines of ackBatch and returns the ones
// whose pipeline failed.
func (d *durable) writeAcks(ctx context.Context, acks []streams.AckRequest) (failed []streams.AckRequest) {
	n := d.node
	for len(acks) > 0 {
		k := min(len(acks), ackBatch)
		actx, cancel := context.WithTimeout(ctx, redisTimeout)
		_, err := d.store.AckMany(actx, acks[:k])
		cancel()
		n.durable.result(err)
		if err != nil {
			failed = append(failed, acks[:k]...)
		}
		acks = acks[k:]
	}
	return failed
}

// requeueAcks puts failed acks back unless a newer ack replaced them.
func (d *durable) requeueAcks(failed []streams.AckRequest) {
	n := d.node
	d.ackMu.Lock()
	for _, a := range failed {
		if cur, ok := d.acks[a.Device]; !ok || (cur.Epoch == a.Epoch && cur.Seq < a.Seq) {
			d.acks[a.Device] = a
		}
	}
	d.ackMu.Unlock()
	n.metrics.ackRetries.Add(float64(len(failed)))
	select {
	case d.ackWake <- struct{}{}:
	default:
	}
}

// requestFetch queues s for a read of its inbox after what it has sent.
// The session's fetching flag keeps it on the list at most once.
func (d *durable) requestFetch(s *session) {
	if d == nil {
		s.mu.Lock()
		s.fetching = false
		s.mu.Unlock()
		return
	}
	d.fetchMu.Lock()
	d.fetchList = append(d.fetchList, s)
	d.fetchMu.Unlock()
	select {
	case d.fetchWake <- struct{}{}:
	default:
	}
}

// fetchLoop reads inboxes for sessions that are behind, many per pipeline.
func (d *durable) fetchLoop() {
	n := d.node
	var list []*session
	for {
		select {
		case <-n.stop:
			return
		case <-d.fetchWake:
		}
		d.fetchMu.Lock()
		list, d.fetchList = d.fetchList, list[:0]
		d.fetchMu.Unlock()
		for len(list) > 0 {
			k := min(len(list), fetchBatch)
			n.durable.fetch(list[:k])
			list = list[k:]
		}
	}
}

func (d *durable) fetch(sessions []*session) {
	n := d.node
	reqs := make([]streams.ReadRequest, 0, len(sessions))
	asked := make([]*session, 0, len(sessions))
	for _, s := range sessions {
		key, epoch, after, limit, ok := s.fetchWant()
		if !ok {
			continue
		}
		reqs = append(reqs, streams.ReadRequest{Device: key, Epoch: epoch, After: after, Limit: limit})
		asked = append(asked, s)
	}
	if len(reqs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, redisTimeout)
	res, err := d.store.ReadMany(ctx, reqs)
	cancel()
	n.durable.result(err)
	if err != nil {
		// Try again later: the sessions stay behind, and their next ack or
		// delivery asks again.
		for _, s := range asked {
			s.fetched(nil, true)
		}
		return
	}
	for i, s := range asked {
		r := res[i]
		if r.EpochChanged {
			s.closeWith(closeResync, &wire.Control{Kind: wire.ControlResync, Reason: "the inbox lost continuity; reconnect to resume"})
			continue
		}
		offers := make([]offer, 0, len(r.Entries))
		for k := range r.Entries {
			offers = append(offers, entryOffer(r.Epoch, &r.Entries[k], viaFetch))
		}
		if len(r.Entries) == 0 && r.Last > reqs[i].After {
			// Everything after the send position expired: move past it so
			// the next message is not held waiting for it.
			s.skipTo(r.Last)
		}
		s.fetched(offers, len(r.Entries) == reqs[i].Limit)
	}
}

// releaseRoute queues the compare-and-delete of a closed session's route.
func (d *durable) releaseRoute(key string, epoch uint64) {
	n := d.node
	select {
	case d.releases <- routeRelease{device: key, epoch: epoch}:
	default:
		// The route stays until its TTL or the device's next connect
		// replaces it; pushes meanwhile are stored and passed on here, where
		// no session takes them.
		n.metrics.routeReleasesDropped.Inc()
	}
}

// releaseLoop releases closed sessions' routes, as many as are queued
// (up to releaseBatch) in one round trip.
func (d *durable) releaseLoop() {
	n := d.node
	batch := make([]routeRelease, 0, releaseBatch)
	for {
		select {
		case <-n.stop:
			return
		case r := <-d.releases:
			batch = append(batch[:0], r)
		}
		batch = d.takeReleases(batch)
		if err := n.durable.releaseRoutes(n.ctx, batch); err != nil && n.ctx.Err() != nil {
			// Shutdown cut the call short: leave the batch to flushDurable.
			d.releaseMu.Lock()
			d.unreleased = append(d.unreleased, batch...)
			d.releaseMu.Unlock()
			return
		}
	}
}

// takeReleases appends queued releases to batch, without waiting, until
// it holds releaseBatch.
func (d *durable) takeReleases(batch []routeRelease) []routeRelease {
	for len(batch) < releaseBatch {
		select {
		case r := <-d.releases:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// releaseRoutes compares and deletes the routes in one call. A route
// that fails to go stays until its TTL or the device's next connect.
func (d *durable) releaseRoutes(ctx context.Context, batch []routeRelease) error {
	n := d.node
	if len(batch) == 0 {
		return nil
	}
	devices := make([]string, len(batch))
	routes := make([]streams.Route, len(batch))
	for i, r := range batch {
		devices[i], routes[i] = r.device, streams.Route{Node: n.cfg.NodeID, Epoch: r.epoch}
	}
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	_, err := d.store.ReleaseRoutes(ctx, devices, routes)
	n.durable.result(err)
	return err
}

// flushDurable writes, once the loops have stopped, what they left
// queued: every device's latest ack, so its next session does not get
// those messages again, and the release of every closed session's
// route, so pushes are not passed on to a node that is gone.
func (d *durable) flush(ctx context.Context) {
	n := d.node
	n.durable.writeAcks(ctx, d.takeAcks(nil))
	d.releaseMu.Lock()
	batch := d.unreleased
	d.unreleased = nil
	d.releaseMu.Unlock()
	for ctx.Err() == nil {
		for len(batch) > releaseBatch {
			_ = n.durable.releaseRoutes(ctx, batch[:releaseBatch])
			batch = batch[releaseBatch:]
		}
		if batch = d.takeReleases(batch); len(batch) == 0 {
			return
		}
		_ = n.durable.releaseRoutes(ctx, batch)
		batch = batch[:0]
	}
}

// handOver leaves nothing in this node's delivery stream when it stops:
// once the loops have stopped and flush has released the sessions'
// routes, it applies what other nodes wrote to the stream meanwhile
// (passing on what a live node can still deliver: the rest is in the
// inboxes the devices replay where they reconnect), then removes the
// node's heartbeat, so that the region takes the node for gone at once
// and takes over anything written to the stream later.
func (d *durable) handOver(ctx context.Context) {
	n := d.node
	var last string
	entries := 0
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, redisTimeout)
		ds, err := d.store.PendingDeliveries(rctx, n.cfg.NodeID, deliveryBatch)
		if err == nil && len(ds) == 0 {
			ds, err = d.store.ReadDeliveries(rctx, n.cfg.NodeID, deliveryBatch, 0)
		}
		cancel()
		if err != nil || len(ds) == 0 || ds[0].ID == last {
			// Done, or a batch could not be passed on: the region's
			// takeover claims it once the heartbeat is gone.
			break
		}
		last = ds[0].ID
		entries += len(ds)
		n.durable.applyDeliveries(ds, n.cfg.NodeID, true)
	}
	lctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	if err := d.store.Leave(lctx, n.cfg.NodeID); err != nil {
		n.log.Warn("could not remove this node's heartbeat: the others take over its delivery stream when it expires", "err", err)
		return
	}
	n.log.Info("delivery stream handed over: the region takes this node for gone", "entries_applied", entries)
}

// sessionClosed releases what an open session held beyond the hub.
func (n *Node) sessionClosed(s *session) {
	if n.durable == nil {
		return
	}
	s.mu.Lock()
	key, epoch := s.key, s.connEpoch
	s.mu.Unlock()
	if epoch != 0 {
		n.durable.releaseRoute(key, epoch)
	}
}

// deliveryLoop reads this node's delivery stream and hands each entry to the
// local sessions, starting with what it read before it last stopped and
// never acked.
func (d *durable) deliveryLoop() {
	n := d.node
	n.durable.deliveriesPending()
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-n.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(n.ctx, redisTimeout+deliveryBlock)
		ds, err := d.store.ReadDeliveries(ctx, n.cfg.NodeID, deliveryBatch, deliveryBlock)
		cancel()
		n.durable.result(err)
		if err != nil {
			select {
			case <-n.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		n.durable.applyDeliveries(ds, n.cfg.NodeID, false)
	}
}

// deliveriesPending applies, and so acks, the entries of this node's delivery
// stream that a previous run read and never acked (it was killed between
// the two): left pending they would stay in the stream's consumer group
// for good. Their messages are in the inboxes too, so a Redis error only
// leaves them for the next start.
func (d *durable) deliveriesPending() {
	n := d.node
	var first string
	for {
		ctx, cancel := context.WithTimeout(n.ctx, redisTimeout)
		ds, err := d.store.PendingDeliveries(ctx, n.cfg.NodeID, deliveryBatch)
		cancel()
		n.durable.result(err)
		if err != nil || len(ds) == 0 || ds[0].ID == first {
			// Done, or the last batch's ack failed: leave the rest.
			return
		}
		first = ds[0].ID
		n.log.Info("applying deliveries read before the last stop and never acked", "entries", len(ds))
		n.metrics.entriesRecovered.Add(float64(len(ds)))
		n.durable.applyDeliveries(ds, n.cfg.NodeID, false)
	}
}

// applyDeliveries applies delivery entries read from node's stream (this node's
// own, or a dead node's being taken over) and acks them there. Push
// targets of a taken-over entry that no session here takes are passed on
// first (reroute): their device may still be connected to that node,
// paused rather than dead, which would otherwise never see them. So are
// those of this node's own entries when passOn is set (handOver: its
// sessions are gone). When passing them on fails the entries stay
// pending, and the next takeover pass claims them again.
func (d *durable) applyDeliveries(ds []streams.Delivery, node string, passOn bool) {
	n := d.node
	if len(ds) == 0 {
		return
	}
	takeover := node != n.cfg.NodeID
	passOn = passOn || takeover
	var stranded []strandedTarget
	ids := make([]string, 0, len(ds))
	for _, dl := range ds {
		ids = append(ids, dl.ID)
		if dl.Blob == nil {
			continue // trimmed by the stream's cap since it was read: just ack it
		}
		e, err := decodeEntry(dl.Blob)
		if err != nil {
			n.metrics.entryErrors.Inc()
			n.log.Warn("dropping an undecodable delivery entry", "stream", node, "entry", dl.ID, "err", err)
			continue
		}
		switch e.kind {
		case entryPush:
			via := viaLive
			if takeover {
				via = viaTakeover
			}
			took := n.deliverTargets(&e.msg, e.targets, via)
			if passOn {
				for i, ok := range took {
					if !ok {
						stranded = append(stranded, strandedTarget{msg: &e.msg, target: e.targets[i]})
					}
				}
			}
		case entryKick:
			if s := n.hub.lookup(e.device); s != nil && s.olderThan(e.connEpoch) {
				s.kick("another connection of this device took over")
			}
		case entryFanout:
			// A dead node's group messages were for its own sessions,
			// which are gone: this node's members had theirs already.
			if !takeover {
				n.handFanout(n.frameID(e.frame), e.frame, e.group, e.aud)
			}
		case entryMember:
			// Likewise a membership change for a session of the dead
			// node; its device's next open reads the change from Redis.
			if !takeover {
				n.applyMember(e.device, e.connEpoch, e.group, e.via, e.join)
			}
		}
	}
	ctx, cancel := context.WithTimeout(n.ctx, redisTimeout)
	defer cancel()
	if len(stranded) > 0 {
		if err := n.durable.reroute(ctx, stranded); err != nil {
			n.log.Warn("could not pass on taken-over deliveries; claiming them again later", "stream", node, "err", err)
			return
		}
	}
	err := d.store.AckDeliveries(ctx, node, ids)
	n.durable.result(err)
}

// strandedTarget is a target of a taken-over push entry that no session
// of this node took.
type strandedTarget struct {
	msg    *entryMessage
	target entryTarget
}

// reroute passes stranded targets on to the node their route names, when
// the route still names the connection the entry was meant for and that
// node is alive now: the "dead" node came back (it was paused or stalled,
// not dead), and its session waits for them. Every other target is left
// to its inbox, which has held the message since before the entry was
// written: a device that reconnected elsewhere replayed it, and a node
// still dead re-reads every local session's inbox once it finds its
// heartbeat lost (resyncSessions).
func (d *durable) reroute(ctx context.Context, stranded []strandedTarget) error {
	n := d.node
	devices := make([]string, len(stranded))
	for i, st := range stranded {
		devices[i] = st.target.device
	}
	routes, err := d.store.Routes(ctx, devices)
	n.durable.result(err)
	if err != nil {
		return err
	}
	live, _, err := d.store.Nodes(ctx)
	n.durable.result(err)
	if err != nil {
		return err
	}
	alive := make(map[string]bool, len(live))
	for _, info := range live {
		alive[info.ID] = true
	}
	// One entry per node and message, as pushDevices writes them.
	byNode := map[string]map[*entryMessage][]entryTarget{}
	forwarded := 0
	for i, st := range stranded {
		r := routes[i]
		if r.Node == "" || r.Epoch != st.target.connEpoch || !alive[r.Node] {
			continue
		}
		if byNode[r.Node] == nil {
			byNode[r.Node] = map[*entryMessage][]entryTarget{}
		}
		byNode[r.Node][st.msg] = append(byNode[r.Node][st.msg], st.target)
		forwarded++
	}
	if forwarded == 0 {
		return nil
	}
	blobs := make(map[string][][]byte, len(byNode))
	for node, msgs := range byNode {
		for m, ts := range msgs {
			blobs[node] = append(blobs[node], appendPushEntry(nil, m, ts))
		}
	}
	err = d.store.Deliver(ctx, blobs)
	n.durable.result(err)
	if err == nil {
		n.metrics.takeoverForwarded.Add(float64(forwarded))
	}
	return err
}

// deliverTargets offers a stored message to the local sessions it was
// routed to and reports, per target, whether a session took it. via says
// how the message came (live or takeover), for its trace.
func (n *Node) deliverTargets(m *entryMessage, targets []entryTarget, via string) []bool {
	took := make([]bool, len(targets))
	p := wire.Push{ID: m.id, Business: m.business, Priority: m.priority, Created: m.created, Payload: m.payload}
	buf := make([]byte, 0, wire.PushLen(&p)+8)
	for i, t := range targets {
		s := n.hub.lookup(t.device)
		if s == nil || s.olderThan(t.connEpoch) {
			// Offline here, or a newer connection elsewhere owns the
			// route: the inbox has it for the device's next session.
			n.trace.missed(m.id, t.device, t.seq, "no session of that connection here (closed or moved): the inbox keeps it for the next")
			continue
		}
		p.Seq = t.seq
		buf = wire.AppendPush(buf[:0], &p)
		took[i] = s.deliver([]offer{{epoch: t.inboxEpoch, seq: t.seq, frame: buf, priority: m.priority, business: m.business,
			id: m.id, via: via}}) != offerRejected
		if !took[i] {
			n.trace.missed(m.id, t.device, t.seq, "the session was closing or its inbox changed epoch: the inbox keeps it for the next")
		}
	}
	return took
}

// frameID returns the message id of an encoded group PUSH, for its
// trace; "" when tracing is off (nothing is decoded then).
func (n *Node) frameID(frame []byte) string {
	if n.trace == nil {
		return ""
	}
	if f, _, err := wire.Decode(frame, len(frame)); err == nil {
		if p, ok := f.(*wire.Push); ok {
			return p.ID
		}
	}
	return ""
}

// olderThan reports whether the session's connection predates route epoch
// epoch, i.e. the route has since moved to a newer connection.
func (s *session) olderThan(epoch uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connEpoch < epoch
}

// skipTo moves a session's send position past seqs the inbox no longer
// holds, and flags the next PUSH so the device accepts the jump.
func (s *session) skipTo(seq uint64) {
	s.mu.Lock()
	if seq > s.sent {
		s.sent, s.gapNext = seq, true
	}
	s.mu.Unlock()
}

// livenessLoop publishes this node's heartbeat, watches Redis, takes over
// the streams of dead nodes, and has the routes checked when Redis may
// have lost them.
func (d *durable) livenessLoop() {
	n := d.node
	tick := time.NewTicker(n.cfg.NodeHeartbeat)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
			continued, dead, err := n.durable.heartbeat()
			if err != nil {
				continue
			}
			ctx, cancel := context.WithTimeout(n.ctx, redisTimeout)
			n.durable.takeOverDead(ctx, dead)
			cancel()
			// Start published the first heartbeat, so one that does not
			// continue the previous means Redis may have lost this node's
			// routes: check them now rather than at the periodic refresh.
			if !continued {
				n.log.Warn("redis lost this node's heartbeat (data loss, restart, failover or a stall): checking every route and re-reading every inbox")
				select {
				case d.resyncWake <- struct{}{}:
				default:
				}
			}
		}
	}
}

// refreshLoop renews the routes of the local sessions every RouteRefresh,
// and at once when the liveness loop asks; after a lost heartbeat it also
// resyncs every session with its inbox. It has its own goroutine: at a
// million sessions a pass is a thousand pipelines, which must not hold up
// heartbeats.
func (d *durable) refreshLoop() {
	n := d.node
	tick := time.NewTicker(n.cfg.RouteRefresh)
	defer tick.Stop()
	for {
		resync := false
		select {
		case <-n.stop:
			return
		case <-tick.C:
		case <-d.refreshWake:
		case <-d.resyncWake:
			resync = true
		}
		// Routes first: a session whose device moved meanwhile is closed
		// rather than resynced.
		n.durable.refreshRoutes()
		if resync {
			n.durable.resyncSessions()
		}
	}
}

// resyncSessions has every open session read its inbox after what it has
// sent, as a delivery showing it behind would. While this node's
// heartbeat was lost, other nodes took it for dead and took over its
// delivery stream: they pass on what they can route to a node alive at
// that moment, and leave the rest to the inboxes, which this reads.
func (d *durable) resyncSessions() {
	n := d.node
	resynced := 0
	n.hub.each(func(s *session) {
		if s.markBehind() {
			n.durable.requestFetch(s)
		}
		resynced++
	})
	n.metrics.resyncs.Add(float64(resynced))
	n.log.Info("re-reading the inboxes of every local session", "sessions", resynced)
}

// heartbeat publishes this node's liveness, addresses and load, refreshes
// its view of the region's live nodes, and returns the dead ones, and
// whether Redis still held this node's previous heartbeat.
func (d *durable) heartbeat() (continued bool, dead []string, err error) {
	n := d.node
	ctx, cancel := context.WithTimeout(n.ctx, redisTimeout)
	defer cancel()
	continued, err = d.store.Heartbeat(ctx, n.nodeInfo())
	if err == nil {
		dead, err = n.durable.refreshLiveNodes(ctx)
	}
	n.durable.result(err)
	return continued, dead, err
}

func (n *Node) nodeInfo() streams.NodeInfo {
	a := n.Addrs()
	return streams.NodeInfo{
		ID:         n.cfg.NodeID,
		DeviceAddr: n.advertisedWS(a),
		TCPAddr:    n.advertisedTCP(a),
		Conns:      n.hub.count.Load(),
		Refusing:   n.refusal(),
	}
}

// takeOverDead drains the delivery streams of nodes whose heartbeat
// expired: it claims their entries, applies them here (a push whose device
// has reconnected to this node reaches it; the others stay in their
// inboxes) and retires the node once its stream is empty.
func (d *durable) takeOverDead(ctx context.Context, dead []string) {
	n := d.node
	for _, node := range dead {
		if node == n.cfg.NodeID {
			continue
		}
		ds, err := d.store.TakeOver(ctx, node, n.cfg.NodeID, deliveryBatch)
		if err != nil {
			continue
		}
		if len(ds) > 0 {
			n.log.Info("took over a dead node's deliveries", "dead", node, "entries", len(ds))
			n.metrics.takenOver.Add(float64(len(ds)))
			n.durable.applyDeliveries(ds, node, true)
			continue
		}
		if err := d.store.RetireNode(ctx, node); err == nil {
			n.log.Info("retired a dead node", "dead", node)
		}
	}
}

// refreshLiveNodes caches the region's live nodes (for dispatch and
// group pushes) and returns the dead ones.
func (d *durable) refreshLiveNodes(ctx context.Context) ([]string, error) {
	n := d.node
	live, dead, err := d.store.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	n.liveNodes.Store(&live)
	return dead, nil
}

// refreshRoutes renews the route TTL of every local session, in chunks.
// A session whose route is gone (Redis lost it) or names another
// connection can no longer be reached by pushes: it is told to resync, and
// its device reconnects, claims a route and learns what its inbox lost.
func (d *durable) refreshRoutes() {
	n := d.node
	var keys []string
	var routes []streams.Route
	var sessions []*session
	flush := func() {
		if len(keys) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(n.ctx, redisTimeout)
		kept, err := d.store.RefreshRoutes(ctx, keys, routes)
		cancel()
		n.durable.result(err)
		for i, ok := range kept {
			if !ok {
				n.metrics.routesLost.Inc()
				sessions[i].closeWith(closeResync, &wire.Control{Kind: wire.ControlResync, Reason: "this connection's route was lost; reconnect to resume"})
			}
		}
		keys, routes, sessions = keys[:0], routes[:0], sessions[:0]
	}
	n.hub.each(func(s *session) {
		s.mu.Lock()
		key, epoch, open := s.key, s.connEpoch, s.state == stateOpen && !s.closing
		s.mu.Unlock()
		if epoch == 0 || !open {
			return
		}
		keys = append(keys, key)
		routes = append(routes, streams.Route{Node: n.cfg.NodeID, Epoch: epoch})
		sessions = append(sessions, s)
		if len(keys) == 1000 {
			flush()
		}
	})
	flush()
}
