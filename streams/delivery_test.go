package streams

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
)

func blobs(ds []Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d.Blob)
	}
	return out
}

func ids(ds []Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func TestStore_DeliverReadAck(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	for _, n := range []string{"n1", "n2"} {
		if err := env.store.EnsureGroup(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.store.EnsureGroup(ctx, "n1"); err != nil {
		t.Fatalf("second EnsureGroup: %v", err)
	}
	err := env.store.Deliver(ctx, map[string][][]byte{
		"n1": {[]byte("a"), []byte("b"), []byte("c")},
		"n2": {[]byte("x")},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := env.store.ReadDeliveries(ctx, "n1", 10, 50*time.Millisecond)
	if err != nil || fmt.Sprint(blobs(got)) != "[a b c]" {
		t.Fatalf("read n1: %q %v", blobs(got), err)
	}
	if got2, err := env.store.ReadDeliveries(ctx, "n2", 10, 0); err != nil || fmt.Sprint(blobs(got2)) != "[x]" {
		t.Fatalf("read n2: %q %v", blobs(got2), err)
	}
	if err := env.store.AckDeliveries(ctx, "n1", ids(got)); err != nil {
		t.Fatal(err)
	}
	if n := env.rdb.XPending(ctx, deliveryKey("n1"), group).Val().Count; n != 0 {
		t.Fatalf("%d pending after ack", n)
	}
	// Nothing new: a bounded block returns empty, not an error.
	start := time.Now()
	got, err = env.store.ReadDeliveries(ctx, "n1", 10, 30*time.Millisecond)
	if err != nil || len(got) != 0 || time.Since(start) > 2*time.Second {
		t.Fatalf("empty read: %v %v after %v", got, err, time.Since(start))
	}
	// A blocked reader wakes up for a new entry.
	done := make(chan []Delivery, 1)
	go func() {
		got, err := env.store.ReadDeliveries(testCtx(t), "n1", 10, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	poll.Until(t, 5*time.Second, func() error {
		if n := nodeFor(t, env.rdb, deliveryKey("n1")).ClientList(ctx).Val(); !strings.Contains(n, "cmd=xreadgroup") {
			return errors.New("reader not blocked yet")
		}
		return nil
	})
	if err := env.store.Deliver(ctx, map[string][][]byte{"n1": {[]byte("d")}}); err != nil {
		t.Fatal(err)
	}
	if got := <-done; fmt.Sprint(blobs(got)) != "[d]" {
		t.Fatalf("blocked read got %q", blobs(got))
	}
}

func TestStore_ReadDeliveriesRecreatesLostGroup(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	if err := env.store.EnsureGroup(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	flushAll(t, env.rdb)
	if got, err := env.store.ReadDeliveries(ctx, "n1", 10, 0); err != nil || len(got) != 0 {
		t.Fatalf("read after FLUSHALL: %v %v", got, err)
	}
	if err := env.store.Deliver(ctx, map[string][][]byte{"n1": {[]byte("a")}}); err != nil {
		t.Fatal(err)
	}
	if got, err := env.store.ReadDeliveries(ctx, "n1", 10, 0); err != nil || len(got) != 1 {
		t.Fatalf("read after the group came back: %v %v", got, err)
	}
}

func TestStore_DeliveryStreamIsCapped(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{DeliveryMaxLen: 50})
	ctx := testCtx(t)
	for i := 0; i < 20; i++ {
		batch := make([][]byte, 100)
		for j := range batch {
			batch[j] = []byte("x")
		}
		if err := env.store.Deliver(ctx, map[string][][]byte{"n1": batch}); err != nil {
			t.Fatal(err)
		}
	}
	// MAXLEN ~ trims whole stream nodes (stream-node-max-entries 100).
	if n := env.rdb.XLen(ctx, deliveryKey("n1")).Val(); n > 50+100 {
		t.Fatalf("delivery stream holds %d of 2000 entries, want <= 150", n)
	}
}

func TestStore_TakeOverDrainsDeadNode(t *testing.T) {
	t.Parallel()
	// ClaimMinIdle must outlast the two calls between the dead node's read
	// and the early take over, a loaded machine included (50ms did not).
	env := newEnv(t, Config{ClaimMinIdle: 2 * time.Second, NodeTTL: time.Hour})
	ctx := testCtx(t)
	if err := errOf(env.store.Heartbeat(ctx, NodeInfo{ID: "dead"})); err != nil {
		t.Fatal(err)
	}
	if err := env.store.EnsureGroup(ctx, "dead"); err != nil {
		t.Fatal(err)
	}
	deliver := func(bs ...string) {
		t.Helper()
		var batch [][]byte
		for _, b := range bs {
			batch = append(batch, []byte(b))
		}
		if err := env.store.Deliver(ctx, map[string][][]byte{"dead": batch}); err != nil {
			t.Fatal(err)
		}
	}
	deliver("p1", "p2", "p3", "u1", "u2")
	// The node reads three and dies before acking them.
	if got, err := env.store.ReadDeliveries(ctx, "dead", 3, 0); err != nil || len(got) != 3 {
		t.Fatalf("dead node's read: %v %v", got, err)
	}
	deliver("u3")

	// Entries the dead node read moments ago are not idle long enough yet:
	// only never-delivered ones come out.
	got, err := env.store.TakeOver(ctx, "dead", "live", 10)
	if err != nil || fmt.Sprint(blobs(got)) != "[u1 u2 u3]" {
		t.Fatalf("early take over: %q %v; want the unread ones", blobs(got), err)
	}
	if err := env.store.AckDeliveries(ctx, "dead", ids(got)); err != nil {
		t.Fatal(err)
	}
	if err := env.store.RetireNode(ctx, "dead"); !errors.Is(err, ErrNodeAlive) {
		t.Fatalf("retire a node with a heartbeat: %v, want ErrNodeAlive", err)
	}
	mustDo(t, env.rdb.Del(ctx, heartbeatKey("dead"))) // the heartbeat expires
	if err := env.store.RetireNode(ctx, "dead"); !errors.Is(err, ErrNotDrained) {
		t.Fatalf("retire with pending entries: %v, want ErrNotDrained", err)
	}

	// Each claim is acked at once, as the appliance does: an entry claimed
	// and left pending is idle again after ClaimMinIdle and would be
	// claimed a second time, which a slow loop here would see.
	var pending []Delivery
	poll.Until(t, 20*time.Second, func() error {
		got, err := env.store.TakeOver(ctx, "dead", "live", 2)
		if err != nil {
			return err
		}
		if err := env.store.AckDeliveries(ctx, "dead", ids(got)); err != nil {
			return err
		}
		pending = append(pending, got...)
		if len(pending) < 3 {
			return fmt.Errorf("claimed %q so far", blobs(pending))
		}
		return nil
	})
	if fmt.Sprint(blobs(pending)) != "[p1 p2 p3]" {
		t.Fatalf("claimed %q, want [p1 p2 p3]", blobs(pending))
	}
	deliver("late")
	if err := env.store.AckDeliveries(ctx, "dead", ids(pending)); err != nil {
		t.Fatal(err)
	}
	if err := env.store.RetireNode(ctx, "dead"); !errors.Is(err, ErrNotDrained) {
		t.Fatalf("retire with an unread entry: %v, want ErrNotDrained", err)
	}
	got, err = env.store.TakeOver(ctx, "dead", "live", 10)
	if err != nil || fmt.Sprint(blobs(got)) != "[late]" {
		t.Fatalf("take over the late entry: %q %v", blobs(got), err)
	}
	if err := env.store.AckDeliveries(ctx, "dead", ids(got)); err != nil {
		t.Fatal(err)
	}
	if err := env.store.RetireNode(ctx, "dead"); err != nil {
		t.Fatalf("retire a drained node: %v", err)
	}
	if env.rdb.Exists(ctx, deliveryKey("dead")).Val() != 0 {
		t.Fatal("delivery stream survived RetireNode")
	}
	if _, dead, _ := env.store.Nodes(ctx); len(dead) != 0 {
		t.Fatalf("retired node still listed dead: %v", dead)
	}
	// Nothing left to take over, and a stream that never existed is fine.
	for _, n := range []string{"dead", "never"} {
		if got, err := env.store.TakeOver(ctx, n, "live", 10); err != nil || len(got) != 0 {
			t.Fatalf("take over %s: %v %v", n, got, err)
		}
	}
}

func TestStore_TakeOverWithoutGroup(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	// Entries delivered to a node that died before creating its group.
	if err := env.store.Deliver(ctx, map[string][][]byte{"dead": {[]byte("a"), []byte("b")}}); err != nil {
		t.Fatal(err)
	}
	if err := env.store.RetireNode(ctx, "dead"); !errors.Is(err, ErrNotDrained) {
		t.Fatalf("retire an unread stream without a group: %v", err)
	}
	got, err := env.store.TakeOver(ctx, "dead", "live", 10)
	if err != nil || fmt.Sprint(blobs(got)) != "[a b]" {
		t.Fatalf("take over: %q %v", blobs(got), err)
	}
}

func TestStore_NodesLiveAndDead(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	short := New(env.rdb, Config{NodeTTL: 50 * time.Millisecond})
	ctx := testCtx(t)
	n1 := NodeInfo{ID: "n1", DeviceAddr: ":8080", TCPAddr: ":8081", Conns: 42}
	if err := errOf(env.store.Heartbeat(ctx, n1)); err != nil {
		t.Fatal(err)
	}
	if err := errOf(short.Heartbeat(ctx, NodeInfo{ID: "n2"})); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		live, dead, err := env.store.Nodes(ctx)
		if err != nil {
			return err
		}
		if len(live) != 1 || len(dead) != 1 || dead[0] != "n2" {
			return fmt.Errorf("live %+v dead %v", live, dead)
		}
		got := live[0]
		if got.Updated.IsZero() || time.Since(got.Updated) > time.Minute {
			return fmt.Errorf("updated %v", got.Updated)
		}
		got.Updated = time.Time{}
		if got != n1 {
			return fmt.Errorf("live node %+v, want %+v", got, n1)
		}
		return nil
	})
	if ttl := env.rdb.PTTL(ctx, heartbeatKey("n1")).Val(); ttl <= 0 || ttl > 10*time.Second {
		t.Fatalf("heartbeat ttl %v, want (0, NodeTTL]", ttl)
	}
	// A dead node that comes back is live again.
	if err := errOf(env.store.Heartbeat(ctx, NodeInfo{ID: "n2"})); err != nil {
		t.Fatal(err)
	}
	if live, dead, _ := env.store.Nodes(ctx); len(live) != 2 || len(dead) != 0 {
		t.Fatalf("after n2's heartbeat: live %d dead %v", len(live), dead)
	}
}

// TestStore_PendingDeliveriesAfterARestart: entries a node read and never
// acked come back, oldest first, from PendingDeliveries until acked; new
// entries do not.
func TestStore_PendingDeliveriesAfterARestart(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	if got, err := env.store.PendingDeliveries(ctx, "n1", 10); err != nil || len(got) != 0 {
		t.Fatalf("before the group exists: %q %v", blobs(got), err)
	}
	if err := env.store.EnsureGroup(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := env.store.Deliver(ctx, map[string][][]byte{"n1": {[]byte("a"), []byte("b"), []byte("c")}}); err != nil {
		t.Fatal(err)
	}
	read, err := env.store.ReadDeliveries(ctx, "n1", 2, 0)
	if err != nil || len(read) != 2 {
		t.Fatalf("read: %q %v", blobs(read), err)
	}
	// The node "dies" here: a and b were read, never acked; c never read.
	for round := 0; round < 2; round++ {
		got, err := env.store.PendingDeliveries(ctx, "n1", 10)
		if err != nil || fmt.Sprint(blobs(got)) != "[a b]" {
			t.Fatalf("pending, call %d: %q %v", round+1, blobs(got), err)
		}
	}
	if err := env.store.AckDeliveries(ctx, "n1", ids(read)); err != nil {
		t.Fatal(err)
	}
	if got, err := env.store.PendingDeliveries(ctx, "n1", 10); err != nil || len(got) != 0 {
		t.Fatalf("pending after the ack: %q %v", blobs(got), err)
	}
	if got, err := env.store.ReadDeliveries(ctx, "n1", 10, 0); err != nil || fmt.Sprint(blobs(got)) != "[c]" {
		t.Fatalf("new entries: %q %v", blobs(got), err)
	}
}

// TestStore_DeliveredFollowsReadsAndAcks: DeliverIDs returns each node's
// last entry id, and Delivered says an entry is delivered only once the
// node has read it and acked it, and every entry before it; a retired
// node's stream has nothing left to deliver.
func TestStore_DeliveredFollowsReadsAndAcks(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	if err := env.store.EnsureGroup(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	last, err := env.store.DeliverIDs(ctx, map[string][][]byte{"n1": {[]byte("a"), []byte("b")}})
	if err != nil || len(last) != 1 || last["n1"] == "" {
		t.Fatalf("deliver: %v, %v", last, err)
	}
	delivered := func(want bool, when string) {
		t.Helper()
		if ok, err := env.store.Delivered(ctx, "n1", last["n1"]); err != nil || ok != want {
			t.Fatalf("%s: delivered %v, %v; want %v", when, ok, err, want)
		}
	}
	delivered(false, "unread")
	first, err := env.store.ReadDeliveries(ctx, "n1", 1, 0)
	if err != nil || len(first) != 1 {
		t.Fatalf("read one: %v, %v", first, err)
	}
	if err := env.store.AckDeliveries(ctx, "n1", ids(first)); err != nil {
		t.Fatal(err)
	}
	delivered(false, "the last unread")
	second, err := env.store.ReadDeliveries(ctx, "n1", 1, 0)
	if err != nil || len(second) != 1 || second[0].ID != last["n1"] {
		t.Fatalf("read the last: %v, %v", second, err)
	}
	delivered(false, "read, not acked")
	if err := env.store.AckDeliveries(ctx, "n1", ids(second)); err != nil {
		t.Fatal(err)
	}
	delivered(true, "acked")
	if ok, err := env.store.Delivered(ctx, "gone", last["n1"]); err != nil || !ok {
		t.Fatalf("a node without a stream: delivered %v, %v", ok, err)
	}
}
