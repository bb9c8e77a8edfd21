package streams

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams/streamstest"
)

func TestStore_AppendAssignsContiguousSeqsPerDevice(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	for i := 1; i <= 3; i++ {
		res, err := env.store.Append(ctx, msg(fmt.Sprintf("m%d", i)), []string{"a", "b"})
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 2 {
			t.Fatalf("got %d results, want 2", len(res))
		}
		for _, r := range res {
			if r.Seq != uint64(i) || r.Duplicate || r.Epoch == "" || r.Route != (Route{}) {
				t.Fatalf("append %d to %s: %+v", i, r.Device, r)
			}
		}
		if res[0].Device != "a" || res[1].Device != "b" {
			t.Fatalf("results out of device order: %+v", res)
		}
	}
	// One more to a only: b's counter is independent.
	res, err := env.store.Append(ctx, msg("m4"), []string{"a"})
	if err != nil || res[0].Seq != 4 {
		t.Fatalf("append m4: %+v, %v", res, err)
	}
	res, err = env.store.Append(ctx, msg("m5"), []string{"b"})
	if err != nil || res[0].Seq != 4 {
		t.Fatalf("append m5 to b: %+v, %v; want seq 4", res, err)
	}
}

func TestStore_AppendDedupesByMessageID(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	first, err := env.store.Append(ctx, msg("dup"), []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	// What a go-redis retry after a read timeout, or a caller's retry with
	// the same idempotency key, does: the same call again.
	again, err := env.store.Append(ctx, msg("dup"), []string{"b", "a", "c"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Appended{"a": first[0], "b": first[1]}
	for _, r := range again {
		if r.Device == "c" {
			if r.Duplicate || r.Seq != 1 {
				t.Fatalf("c was never sent dup: %+v", r)
			}
			continue
		}
		w := want[r.Device]
		if !r.Duplicate || r.Seq != w.Seq || r.Epoch != w.Epoch {
			t.Fatalf("retry to %s: %+v, want duplicate of %+v", r.Device, r, w)
		}
	}
	for _, d := range []string{"a", "b", "c"} {
		if n := env.rdb.XLen(ctx, inboxKey(d)).Val(); n != 1 {
			t.Fatalf("inbox %s holds %d entries, want 1", d, n)
		}
	}
	// The next message gets the next seq: the duplicate consumed none.
	res, err := env.store.Append(ctx, msg("next"), []string{"a"})
	if err != nil || res[0].Seq != 2 || res[0].Duplicate {
		t.Fatalf("append after duplicate: %+v, %v", res, err)
	}
}

func TestStore_AppendDedupeWindowIsBounded(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{DedupeWindow: 3})
	ctx := testCtx(t)
	appendN(t, env.store, "a", "m", 10)
	if n := env.rdb.ZCard(ctx, dedupeKey("a")).Val(); n != 3 {
		t.Fatalf("dedupe set holds %d ids, want 3", n)
	}
	res, err := env.store.Append(ctx, msg("m-9"), []string{"a"})
	if err != nil || !res[0].Duplicate || res[0].Seq != 9 {
		t.Fatalf("m-9 inside the window: %+v, %v; want duplicate seq 9", res, err)
	}
	res, err = env.store.Append(ctx, msg("m-1"), []string{"a"})
	if err != nil || res[0].Duplicate || res[0].Seq != 11 {
		t.Fatalf("m-1 outside the window: %+v, %v; want new seq 11", res, err)
	}
}

func TestStore_AppendKeepsSeqsContiguousUnderConcurrency(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{InboxMaxLen: 10000})
	const workers, perWorker = 8, 40
	devices := []string{"d1", "d2", "d3"}

	var mu sync.Mutex
	got := map[string]map[uint64]string{} // device → seq → message id
	for _, d := range devices {
		got[d] = map[uint64]string{}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				res, err := env.store.Append(testCtx(t), msg(id), devices)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, r := range res {
					if prev, dup := got[r.Device][r.Seq]; dup {
						errs <- fmt.Errorf("%s seq %d given to %s and %s", r.Device, r.Seq, prev, id)
					}
					got[r.Device][r.Seq] = id
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const total = workers * perWorker
	for _, d := range devices {
		for seq := uint64(1); seq <= total; seq++ {
			if _, ok := got[d][seq]; !ok {
				t.Fatalf("%s: seq %d never assigned", d, seq)
			}
		}
		r := mustResume(t, env.store, d, Position{}, 0)
		if len(r.Entries) != total || !r.Recovered || r.Last != total {
			t.Fatalf("%s: resume gave %d entries, recovered %v, last %d", d, len(r.Entries), r.Recovered, r.Last)
		}
		for i, e := range r.Entries {
			if e.Seq != uint64(i+1) || e.ID != got[d][e.Seq] {
				t.Fatalf("%s: entry %d is seq %d id %s, want seq %d id %s", d, i, e.Seq, e.ID, i+1, got[d][uint64(i+1)])
			}
		}
	}
}

func TestStore_ResumeReplaysInOrder(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	created := time.Now().Add(-time.Second).Truncate(time.Millisecond)
	for i := 1; i <= 10; i++ {
		m := Message{
			ID:       fmt.Sprintf("m%d", i),
			Business: "news",
			Priority: PriorityHigh,
			Created:  created,
			TTL:      time.Hour,
			Payload:  []byte{byte(i), 0, 0xff},
		}
		if _, err := env.store.Append(ctx, m, []string{"dev"}); err != nil {
			t.Fatal(err)
		}
	}
	r := mustResume(t, env.store, "dev", Position{}, 4)
	if !r.Recovered || r.Last != 10 || r.Acked != 0 || !equalSeqs(seqs(r.Entries), 1, 2, 3, 4) {
		t.Fatalf("fresh resume: recovered %v last %d acked %d seqs %v", r.Recovered, r.Last, r.Acked, seqs(r.Entries))
	}
	e := r.Entries[0]
	if e.ID != "m1" || e.Business != "news" || e.Priority != PriorityHigh ||
		!e.Created.Equal(created) || !e.Expires.Equal(created.Add(time.Hour)) ||
		!bytes.Equal(e.Payload, []byte{1, 0, 0xff}) {
		t.Fatalf("entry round trip: %+v", e)
	}
	r2 := mustResume(t, env.store, "dev", Position{Epoch: r.Epoch, Seq: 4}, 4)
	if !r2.Recovered || r2.Epoch != r.Epoch || !equalSeqs(seqs(r2.Entries), 5, 6, 7, 8) {
		t.Fatalf("resume from 4: recovered %v seqs %v", r2.Recovered, seqs(r2.Entries))
	}
	r3 := mustResume(t, env.store, "dev", Position{Epoch: r.Epoch, Seq: 10}, 4)
	if !r3.Recovered || len(r3.Entries) != 0 {
		t.Fatalf("resume at the end: recovered %v seqs %v", r3.Recovered, seqs(r3.Entries))
	}
}

func TestStore_ResumeFreshDevice(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	r := mustResume(t, env.store, "new", Position{}, 10)
	if !r.Recovered || r.Epoch == "" || r.Last != 0 || len(r.Entries) != 0 {
		t.Fatalf("fresh client on a new device: %+v", r)
	}
	// The epoch Resume created is the one appends use.
	res, err := env.store.Append(testCtx(t), msg("m1"), []string{"new"})
	if err != nil || res[0].Epoch != r.Epoch || res[0].Seq != 1 {
		t.Fatalf("append after resume: %+v, %v; want epoch %s seq 1", res, err, r.Epoch)
	}
	r2 := mustResume(t, env.store, "new", Position{Epoch: r.Epoch}, 10)
	if !r2.Recovered || !equalSeqs(seqs(r2.Entries), 1) {
		t.Fatalf("resume with the created epoch: %+v", r2)
	}
	// A client holding an epoch the server never had for a device without
	// inbox cannot be proven continuous.
	r3 := mustResume(t, env.store, "other", Position{Epoch: "feedfacefeedface", Seq: 3}, 10)
	if r3.Recovered || r3.Epoch == "feedfacefeedface" {
		t.Fatalf("unknown epoch on a new device: %+v", r3)
	}
}

func TestStore_AckManyTrimsAndIgnoresStaleAcks(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	a := appendN(t, env.store, "a", "m", 10)
	b := appendN(t, env.store, "b", "m", 3)

	applied, err := env.store.AckMany(ctx, []AckRequest{
		{Device: "a", Epoch: a.Epoch, Seq: 4},
		{Device: "b", Epoch: b.Epoch, Seq: 3},
	})
	if err != nil || !applied[0] || !applied[1] {
		t.Fatalf("ack: %v, %v", applied, err)
	}
	if n := env.rdb.XLen(ctx, inboxKey("a")).Val(); n != 6 {
		t.Fatalf("inbox a holds %d after ack 4 of 10, want 6", n)
	}
	if n := env.rdb.XLen(ctx, inboxKey("b")).Val(); n != 0 {
		t.Fatalf("inbox b holds %d after acking all, want 0", n)
	}

	applied, err = env.store.AckMany(ctx, []AckRequest{
		{Device: "a", Epoch: a.Epoch, Seq: 3},            // stale
		{Device: "a", Epoch: a.Epoch, Seq: 4},            // repeated
		{Device: "a", Epoch: "0000000000000000", Seq: 8}, // other epoch
		{Device: "a", Epoch: a.Epoch, Seq: 11},           // beyond last
		{Device: "a", Epoch: "", Seq: 8},                 // no epoch
		{Device: "none", Epoch: a.Epoch, Seq: 1},         // no inbox
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, ok := range applied {
		if ok {
			t.Fatalf("ack %d applied, want ignored", i)
		}
	}
	if n := env.rdb.XLen(ctx, inboxKey("a")).Val(); n != 6 {
		t.Fatalf("inbox a holds %d after ignored acks, want 6", n)
	}
	info, err := env.store.Device(ctx, "a")
	if err != nil || info.Acked != 4 || info.Last != 10 || info.InboxLen != 6 {
		t.Fatalf("device a: %+v, %v", info, err)
	}
	if env.rdb.Exists(ctx, metaKey("none")).Val() != 0 {
		t.Fatal("an ack created meta for a device without inbox")
	}

	// A fresh client starts after the server's ack cursor.
	r := mustResume(t, env.store, "a", Position{}, 0)
	if !r.Recovered || r.Acked != 4 || !equalSeqs(seqs(r.Entries), 5, 6, 7, 8, 9, 10) {
		t.Fatalf("resume after ack: %+v", r)
	}
}

func TestStore_ResumeAfterOverflow(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{InboxMaxLen: 5})
	ctx := testCtx(t)
	last := appendN(t, env.store, "a", "m", 12)
	if n := env.rdb.XLen(ctx, inboxKey("a")).Val(); n != 5 {
		t.Fatalf("inbox holds %d entries, want the cap 5", n)
	}
	info, _ := env.store.Device(ctx, "a")
	if info.Lost != 7 {
		t.Fatalf("lost seq %d, want 7", info.Lost)
	}
	for _, tc := range []struct {
		cursor    uint64
		recovered bool
		seqs      []uint64
	}{
		{0, false, []uint64{8, 9, 10, 11, 12}},
		{3, false, []uint64{8, 9, 10, 11, 12}},
		{6, false, []uint64{8, 9, 10, 11, 12}},
		{7, true, []uint64{8, 9, 10, 11, 12}},
		{9, true, []uint64{10, 11, 12}},
	} {
		r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: tc.cursor}, 0)
		if r.Recovered != tc.recovered || !equalSeqs(seqs(r.Entries), tc.seqs...) {
			t.Fatalf("resume from %d: recovered %v seqs %v; want %v %v", tc.cursor, r.Recovered, seqs(r.Entries), tc.recovered, tc.seqs)
		}
	}
	// Acks count: after acking 10, five more fit without trimming.
	if ok, err := env.store.AckMany(ctx, []AckRequest{{Device: "a", Epoch: last.Epoch, Seq: 10}}); err != nil || !ok[0] {
		t.Fatalf("ack 10: %v %v", ok, err)
	}
	appendN(t, env.store, "a", "n", 3)
	info, _ = env.store.Device(ctx, "a")
	if info.Lost != 7 || info.InboxLen != 5 {
		t.Fatalf("after ack and 3 appends: %+v; want lost 7, 5 entries", info)
	}
	r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 10}, 0)
	if !r.Recovered || !equalSeqs(seqs(r.Entries), 11, 12, 13, 14, 15) {
		t.Fatalf("resume from 10: %+v", r)
	}
	// A cursor behind both the trim and the ack cursor: the walk starts
	// after the acks and sees no hole, but the trim still lies after the
	// cursor.
	r = mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 3}, 0)
	if r.Recovered || !equalSeqs(seqs(r.Entries), 11, 12, 13, 14, 15) {
		t.Fatalf("resume from 3 after ack 10: %+v; want not recovered", r)
	}
}

// appendCapped appends n messages with ids prefix-1..prefix-n to device,
// each with MaxLen maxLen, and returns the last result.
func appendCapped(t *testing.T, s *Store, device, prefix string, n int, maxLen int64) Appended {
	t.Helper()
	var last Appended
	for i := 1; i <= n; i++ {
		m := msg(fmt.Sprintf("%s-%d", prefix, i))
		m.MaxLen = maxLen
		res, err := s.Append(testCtx(t), m, []string{device})
		if err != nil {
			t.Fatalf("append %s-%d with max len %d: %v", prefix, i, maxLen, err)
		}
		last = res[0]
	}
	return last
}

func TestStore_AppendMaxLenCapsTheInbox(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{}) // InboxMaxLen 1000
	ctx := testCtx(t)
	last := appendCapped(t, env.store, "a", "m", 5, 3)
	// The cap is exact (XTRIM MINID from the counters), not MAXLEN ~.
	if n := env.rdb.XLen(ctx, inboxKey("a")).Val(); n != 3 {
		t.Fatalf("inbox holds %d entries, want the per-append cap 3", n)
	}
	if info, _ := env.store.Device(ctx, "a"); info.Lost != 2 || info.Last != 5 {
		t.Fatalf("device %+v; want last 5, lost 2", info)
	}
	for _, tc := range []struct {
		pos       Position
		recovered bool
		seqs      []uint64
	}{
		{Position{}, false, []uint64{3, 4, 5}},
		{Position{Epoch: last.Epoch}, false, []uint64{3, 4, 5}},
		{Position{Epoch: last.Epoch, Seq: 1}, false, []uint64{3, 4, 5}},
		{Position{Epoch: last.Epoch, Seq: 2}, true, []uint64{3, 4, 5}},
	} {
		r := mustResume(t, env.store, "a", tc.pos, 0)
		if r.Recovered != tc.recovered || !equalSeqs(seqs(r.Entries), tc.seqs...) {
			t.Fatalf("resume from %+v: recovered %v seqs %v; want %v %v", tc.pos, r.Recovered, seqs(r.Entries), tc.recovered, tc.seqs)
		}
	}

	// MaxLen 0 is Config.InboxMaxLen.
	small := newEnv(t, Config{InboxMaxLen: 4})
	appendCapped(t, small.store, "b", "m", 6, 0)
	if n := small.rdb.XLen(ctx, inboxKey("b")).Val(); n != 4 {
		t.Fatalf("MaxLen 0: inbox holds %d entries, want InboxMaxLen 4", n)
	}
	// A per-append cap above InboxMaxLen overrides it too.
	appendCapped(t, small.store, "c", "m", 6, 10)
	if n := small.rdb.XLen(ctx, inboxKey("c")).Val(); n != 6 {
		t.Fatalf("MaxLen 10: inbox holds %d entries, want all 6", n)
	}
	if r := mustResume(t, small.store, "c", Position{}, 10); !r.Recovered || len(r.Entries) != 6 {
		t.Fatalf("resume under a raised cap: %+v", r)
	}

	m := msg("neg")
	m.MaxLen = -1
	if _, err := env.store.Append(ctx, m, []string{"a"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("MaxLen -1: %v, want ErrInvalidArgument", err)
	}
}

func TestStore_AppendMaxLenChangedBetweenAppends(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	last := appendCapped(t, env.store, "a", "m", 10, 0)
	if info, _ := env.store.Device(ctx, "a"); info.Lost != 0 || info.InboxLen != 10 {
		t.Fatalf("under the default cap: %+v", info)
	}
	// Lowered: the next append trims down to the new cap at once.
	appendCapped(t, env.store, "a", "low", 1, 3)
	if info, _ := env.store.Device(ctx, "a"); info.Lost != 8 || info.InboxLen != 3 {
		t.Fatalf("after lowering the cap to 3: %+v; want lost 8, 3 entries", info)
	}
	if r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch}, 0); r.Recovered || !equalSeqs(seqs(r.Entries), 9, 10, 11) {
		t.Fatalf("resume from 0 after the lowered cap trimmed: %+v", r)
	}
	if r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 8}, 0); !r.Recovered {
		t.Fatalf("resume from 8: %+v; want recovered", r)
	}
	// Raised again: nothing comes back, nothing more is trimmed, and the
	// trim stays visible.
	appendCapped(t, env.store, "a", "high", 2, 100)
	if info, _ := env.store.Device(ctx, "a"); info.Lost != 8 || info.InboxLen != 5 {
		t.Fatalf("after raising the cap: %+v; want lost 8, 5 entries", info)
	}
	if r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 5}, 0); r.Recovered {
		t.Fatalf("resume from 5 after raising the cap: %+v; want not recovered", r)
	}

	// Acked entries do not count against a lowered cap, and a cursor at
	// the ack cursor still learns of the trim after it.
	mustAck(t, env.store, "a", last.Epoch, 10)
	appendCapped(t, env.store, "a", "acked", 1, 2) // seq 14: 11..14 unacked
	if info, _ := env.store.Device(ctx, "a"); info.Lost != 12 || info.InboxLen != 2 {
		t.Fatalf("after acking 10 and capping at 2: %+v; want lost 12, 2 entries", info)
	}
	if r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 10}, 0); r.Recovered || !equalSeqs(seqs(r.Entries), 13, 14) {
		t.Fatalf("resume from the ack cursor: %+v; want not recovered, 13 14", r)
	}
	if r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 12}, 0); !r.Recovered {
		t.Fatalf("resume from 12: %+v; want recovered", r)
	}
}

func TestStore_ResumeAfterMessageTTLExpiry(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	appendN(t, env.store, "a", "live", 1)
	short := msg("short")
	short.TTL = 30 * time.Millisecond
	appendShortLived(t, env.store, short, "a")
	last := appendN(t, env.store, "a", "later", 1)

	r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 1}, 0)
	if r.Recovered || !equalSeqs(seqs(r.Entries), 3) {
		t.Fatalf("resume over an expired entry: recovered %v seqs %v; want false [3]", r.Recovered, seqs(r.Entries))
	}
	// The gap is remembered: the same cursor stays unrecovered, a cursor
	// past it is fine.
	if info, _ := env.store.Device(ctx, "a"); info.Lost != 2 {
		t.Fatalf("lost seq %d, want 2", info.Lost)
	}
	if r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 1}, 0); r.Recovered {
		t.Fatal("second resume from 1 recovered")
	}
	if r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 2}, 0); !r.Recovered || !equalSeqs(seqs(r.Entries), 3) {
		t.Fatalf("resume from 2: %+v", r)
	}
	// ReadMany skips it too.
	rr, err := env.store.ReadMany(ctx, []ReadRequest{{Device: "a", Epoch: last.Epoch, After: 0}})
	if err != nil || !equalSeqs(seqs(rr[0].Entries), 1, 3) {
		t.Fatalf("read: %+v, %v", rr, err)
	}
}

func TestStore_ResumeAfterInboxKeyExpiry(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{InboxTTL: 150 * time.Millisecond})
	ctx := testCtx(t)
	last := appendN(t, env.store, "a", "m", 3)
	for _, k := range []string{metaKey("a"), inboxKey("a"), dedupeKey("a")} {
		if ttl := env.rdb.PTTL(ctx, k).Val(); ttl <= 0 || ttl > 160*time.Millisecond {
			t.Fatalf("%s ttl %v, want (0, 150ms+150ms/16]", k, ttl)
		}
	}
	poll.Until(t, 5*time.Second, func() error {
		if n := env.rdb.Exists(ctx, metaKey("a"), inboxKey("a"), dedupeKey("a")).Val(); n != 0 {
			return fmt.Errorf("%d keys still exist", n)
		}
		return nil
	})
	r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 1}, 0)
	if r.Recovered || r.Epoch == last.Epoch || r.Last != 0 || len(r.Entries) != 0 {
		t.Fatalf("resume after the inbox expired: %+v", r)
	}
	res, err := env.store.Append(ctx, msg("m-1"), []string{"a"})
	if err != nil || res[0].Seq != 1 || res[0].Duplicate || res[0].Epoch != r.Epoch {
		t.Fatalf("append in the new epoch: %+v, %v", res, err)
	}
}

func TestStore_ResumeAfterFlushAll(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	last := appendN(t, env.store, "a", "m", 3)
	flushAll(t, env.rdb)
	// An append first: it starts the new epoch at seq 1.
	res, err := env.store.Append(ctx, msg("after"), []string{"a"})
	if err != nil || res[0].Seq != 1 || res[0].Epoch == last.Epoch {
		t.Fatalf("append after FLUSHALL: %+v, %v", res, err)
	}
	for _, cursor := range []uint64{0, 1, 3} {
		r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: cursor}, 0)
		if r.Recovered || r.Epoch != res[0].Epoch || !equalSeqs(seqs(r.Entries), 1) {
			t.Fatalf("resume from old epoch seq %d: %+v", cursor, r)
		}
	}
}

func TestStore_ResumeDetectsMissingEntries(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)

	// An entry removed behind the store's back (an operator's XDEL, or
	// eviction under maxmemory) is a gap even though no bookkeeping says so.
	last := appendN(t, env.store, "a", "m", 5)
	mustDo(t, env.rdb.XDel(ctx, inboxKey("a"), "0-3"))
	r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 1}, 0)
	if r.Recovered || !equalSeqs(seqs(r.Entries), 2, 4, 5) {
		t.Fatalf("resume over a deleted entry: %+v", r)
	}
	if r := mustResume(t, env.store, "a", Position{Epoch: last.Epoch, Seq: 3}, 0); !r.Recovered {
		t.Fatal("resume past the deleted entry not recovered")
	}

	// A missing tail: the whole inbox stream gone, meta intact.
	last = appendN(t, env.store, "b", "m", 4)
	mustDo(t, env.rdb.Del(ctx, inboxKey("b")))
	r = mustResume(t, env.store, "b", Position{Epoch: last.Epoch, Seq: 2}, 0)
	if r.Recovered || len(r.Entries) != 0 {
		t.Fatalf("resume with the inbox stream gone: %+v", r)
	}
	if info, _ := env.store.Device(ctx, "b"); info.Lost != 4 {
		t.Fatalf("lost %d after a missing tail, want 4", info.Lost)
	}

	// The seq counter went back (Redis lost writes after the client saw
	// them): the epoch changes, since seqs 3 and 4 will be reused.
	// DUMP and RESTORE put the device's keys back as they were after seq 2,
	// as an AOF missing its last second would.
	appendN(t, env.store, "c", "m", 2)
	keys := []string{metaKey("c"), inboxKey("c"), dedupeKey("c")}
	dumps := make([]string, len(keys))
	for i, k := range keys {
		dumps[i] = env.rdb.Dump(ctx, k).Val()
	}
	last = appendN(t, env.store, "c", "n", 2)
	for i, k := range keys {
		if err := env.rdb.RestoreReplace(ctx, k, 0, dumps[i]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	r = mustResume(t, env.store, "c", Position{Epoch: last.Epoch, Seq: 4}, 0)
	if r.Recovered || r.Epoch == last.Epoch || !equalSeqs(seqs(r.Entries), 1, 2) {
		t.Fatalf("resume ahead of the counter: %+v", r)
	}
	res, err := env.store.Append(ctx, msg("new"), []string{"c"})
	if err != nil || res[0].Epoch != r.Epoch || res[0].Seq != 3 {
		t.Fatalf("append after rollback: %+v, %v", res, err)
	}
}

// TestStore_ResumeSaysWhatWasLost: every verdict that is not recovered
// names its cause, so the node can log it and docs/protocol.md §8.3 can
// say what each means; a cursor ahead of the inbox replaces the epoch and
// starts after the ack cursor.
func TestStore_ResumeSaysWhatWasLost(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	a := appendN(t, env.store, "a", "m", 4)
	mustAck(t, env.store, "a", a.Epoch, 1)
	if r := mustResume(t, env.store, "a", Position{Epoch: a.Epoch, Seq: 2}, 0); !r.Recovered || r.Lost != "" {
		t.Fatalf("continuous resume: recovered %v lost %q", r.Recovered, r.Lost)
	}
	if r := mustResume(t, env.store, "fresh", Position{}, 0); !r.Recovered || r.Lost != "" {
		t.Fatalf("fresh device: recovered %v lost %q", r.Recovered, r.Lost)
	}
	if r := mustResume(t, env.store, "gone", Position{Epoch: "feedfacefeedface", Seq: 3}, 0); r.Recovered || r.Lost != LostInbox {
		t.Fatalf("cursor for a device without inbox: recovered %v lost %q, want %q", r.Recovered, r.Lost, LostInbox)
	}
	if r := mustResume(t, env.store, "a", Position{Epoch: "0000000000000000", Seq: 3}, 0); r.Recovered || r.Lost != LostEpoch || r.Epoch != a.Epoch {
		t.Fatalf("cursor from another epoch: %+v, want lost %q and the epoch kept", r, LostEpoch)
	}

	r := mustResume(t, env.store, "a", Position{Epoch: a.Epoch, Seq: a.Seq + 3}, 0)
	if r.Recovered || r.Lost != LostAhead || r.Epoch == a.Epoch || r.Acked != 1 || !equalSeqs(seqs(r.Entries), 2, 3, 4) {
		t.Fatalf("cursor ahead of the inbox: %+v; want lost %q, a new epoch, acked 1, entries 2-4", r, LostAhead)
	}
	if r2 := mustResume(t, env.store, "a", Position{Epoch: r.Epoch, Seq: 1}, 0); !r2.Recovered {
		t.Fatalf("resume in the replaced epoch: %+v", r2)
	}

	mustDo(t, env.rdb.XDel(ctx, inboxKey("a"), "0-3"))
	if r := mustResume(t, env.store, "a", Position{Epoch: r.Epoch, Seq: 1}, 0); r.Recovered || r.Lost != LostEntries {
		t.Fatalf("resume over a deleted entry: recovered %v lost %q, want %q", r.Recovered, r.Lost, LostEntries)
	}
}

func TestStore_ResumeLimitSkipsExpired(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	var expiring []Message
	for i := 1; i <= 6; i++ {
		m := msg(fmt.Sprintf("m%d", i))
		if i%2 == 0 {
			m.TTL = 30 * time.Millisecond
			expiring = append(expiring, m)
		}
		if _, err := env.store.Append(ctx, m, []string{"a"}); err != nil {
			t.Fatal(err)
		}
	}
	waitExpired(t, env.store, "a", expiring...)
	r := mustResume(t, env.store, "a", Position{}, 2)
	if r.Recovered || !equalSeqs(seqs(r.Entries), 1, 3) {
		t.Fatalf("resume limit 2 over expired entries: %+v", r)
	}
	rr, err := env.store.ReadMany(ctx, []ReadRequest{{Device: "a", Epoch: r.Epoch, After: 1, Limit: 2}})
	if err != nil || !equalSeqs(seqs(rr[0].Entries), 3, 5) {
		t.Fatalf("read limit 2 over expired entries: %+v, %v", rr, err)
	}
}

func TestStore_ReadMany(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	a := appendN(t, env.store, "a", "m", 5)
	b := appendN(t, env.store, "b", "m", 3)
	if _, err := env.store.AckMany(ctx, []AckRequest{{Device: "b", Epoch: b.Epoch, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	res, err := env.store.ReadMany(ctx, []ReadRequest{
		{Device: "a", Epoch: a.Epoch, After: 2, Limit: 2},
		{Device: "b", Epoch: b.Epoch, After: 0},
		{Device: "a", Epoch: "0000000000000000", After: 4},
		{Device: "a", Epoch: a.Epoch, After: 9},
		{Device: "none", Epoch: "", After: 0},
		{Device: "gone", Epoch: a.Epoch, After: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(i int, epoch string, changed bool, last uint64, want ...uint64) {
		t.Helper()
		r := res[i]
		if r.Epoch != epoch || r.EpochChanged != changed || r.Last != last || !equalSeqs(seqs(r.Entries), want...) {
			t.Fatalf("request %d: %+v; want epoch %q changed %v last %d seqs %v", i, r, epoch, changed, last, want)
		}
	}
	check(0, a.Epoch, false, 5, 3, 4)
	check(1, b.Epoch, false, 3, 2, 3) // after the ack cursor
	check(2, a.Epoch, true, 5, 1, 2, 3, 4, 5)
	check(3, a.Epoch, true, 5, 1, 2, 3, 4, 5)
	check(4, "", false, 0)
	check(5, "", true, 0)
	if env.rdb.Exists(ctx, metaKey("none"), metaKey("gone")).Val() != 0 {
		t.Fatal("ReadMany created keys")
	}
}

func TestStore_DeviceKeysAreBounded(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{InboxMaxLen: 4, DedupeWindow: 6, InboxTTL: time.Hour})
	ctx := testCtx(t)
	appendN(t, env.store, "a", "m", 20)
	if n := env.rdb.XLen(ctx, inboxKey("a")).Val(); n != 4 {
		t.Fatalf("inbox %d entries, want 4", n)
	}
	if n := env.rdb.ZCard(ctx, dedupeKey("a")).Val(); n != 6 {
		t.Fatalf("dedupe %d ids, want 6", n)
	}
	for _, k := range []string{metaKey("a"), inboxKey("a"), dedupeKey("a")} {
		if ttl := env.rdb.PTTL(ctx, k).Val(); ttl <= time.Hour || ttl > time.Hour+time.Hour/16 {
			t.Fatalf("%s ttl %v, want 1h to 1h+1h/16", k, ttl)
		}
	}
	// A message TTL beyond InboxTTL is capped at it.
	m := msg("long")
	m.TTL = 100 * time.Hour
	if _, err := env.store.Append(ctx, m, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	r := mustResume(t, env.store, "a", Position{}, 0)
	e := r.Entries[len(r.Entries)-1]
	if e.ID != "long" || e.Expires.Sub(e.Created) > time.Hour {
		t.Fatalf("message ttl not capped: %+v", e)
	}
}

func TestStore_RejectsInvalidArguments(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	neg := msg("m")
	neg.TTL = -time.Second
	negLen := msg("m")
	negLen.MaxLen = -5
	for name, err := range map[string]error{
		"empty message id": func() error { _, err := env.store.Append(ctx, msg(""), []string{"a"}); return err }(),
		"braced device":    func() error { _, err := env.store.Append(ctx, msg("m"), []string{"a}b"}); return err }(),
		"empty device":     func() error { _, err := env.store.Append(ctx, msg("m"), []string{"a", ""}); return err }(),
		"negative ttl":     func() error { _, err := env.store.Append(ctx, neg, []string{"a"}); return err }(),
		"negative max len": func() error { _, err := env.store.Append(ctx, negLen, []string{"a"}); return err }(),
		"resume":           func() error { _, err := env.store.Resume(ctx, "{x", Position{}, 1); return err }(),
		"read":             func() error { _, err := env.store.ReadMany(ctx, []ReadRequest{{Device: ""}}); return err }(),
		"ack":              func() error { _, err := env.store.AckMany(ctx, []AckRequest{{Device: "}"}}); return err }(),
		"claim":            func() error { _, _, err := env.store.ClaimRoute(ctx, "a", ""); return err }(),
		"refresh lengths":  errOf(env.store.RefreshRoutes(ctx, []string{"a"}, nil)),
		"refresh device":   errOf(env.store.RefreshRoutes(ctx, []string{"a{"}, []Route{{Node: "n1"}})),
		"refresh node":     errOf(env.store.RefreshRoutes(ctx, []string{"a"}, []Route{{}})),
		"release lengths":  errOf(env.store.ReleaseRoutes(ctx, nil, []Route{{Node: "n1"}})),
		"release device":   errOf(env.store.ReleaseRoutes(ctx, []string{"a", ""}, []Route{{Node: "n1"}, {Node: "n1"}})),
		"release node":     errOf(env.store.ReleaseRoute(ctx, "a", Route{Node: "n}", Epoch: 1})),
		"open device":      func() error { _, _, _, err := env.store.Open(ctx, "", "n1", Position{}, 1); return err }(),
		"open node":        func() error { _, _, _, err := env.store.Open(ctx, "a", "{n", Position{}, 1); return err }(),
		"deliver":          env.store.Deliver(ctx, map[string][][]byte{"": {[]byte("x")}}),
		"heartbeat":        errOf(env.store.Heartbeat(ctx, NodeInfo{ID: "n{1}"})),
	} {
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	if n := dbSize(t, env.rdb); n != 0 {
		t.Fatalf("invalid calls wrote %d keys", n)
	}
}

func TestStore_AppendSetsTTLOnKeysAfterResume(t *testing.T) {
	t.Parallel()
	// Resume creates the meta; the first append then creates the inbox and
	// dedupe keys, which must get their TTL even though the meta's says
	// they need no refresh yet.
	env := newEnv(t, Config{InboxTTL: time.Hour})
	ctx := testCtx(t)
	mustResume(t, env.store, "a", Position{}, 0)
	appendN(t, env.store, "a", "m", 1)
	for _, k := range []string{metaKey("a"), inboxKey("a"), dedupeKey("a")} {
		if ttl := env.rdb.PTTL(ctx, k).Val(); ttl <= time.Hour || ttl > time.Hour+time.Hour/16 {
			t.Fatalf("%s ttl %v, want 1h to 1h+1h/16", k, ttl)
		}
	}
}

func TestStore_AppendRefreshesTTLOnlyWhenDue(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{InboxTTL: time.Hour})
	ctx := testCtx(t)
	keys := []string{metaKey("a"), inboxKey("a"), dedupeKey("a")}
	appendN(t, env.store, "a", "m", 1)

	// More than InboxTTL left: an append leaves the TTLs alone.
	for _, k := range keys {
		mustDo(t, env.rdb.PExpire(ctx, k, 5*time.Hour))
	}
	mustDo(t, env.rdb.HSet(ctx, metaKey("a"), "k", time.Now().Add(5*time.Hour).UnixMilli()))
	appendN(t, env.store, "a", "n", 1)
	for _, k := range keys {
		if ttl := env.rdb.PTTL(ctx, k).Val(); ttl < 4*time.Hour {
			t.Fatalf("%s ttl %v after an append with 5h left, want untouched", k, ttl)
		}
	}

	// Less than InboxTTL left: the append renews all three.
	for _, k := range keys {
		mustDo(t, env.rdb.PExpire(ctx, k, 30*time.Minute))
	}
	mustDo(t, env.rdb.HSet(ctx, metaKey("a"), "k", time.Now().Add(30*time.Minute).UnixMilli()))
	appendN(t, env.store, "a", "o", 1)
	for _, k := range keys {
		if ttl := env.rdb.PTTL(ctx, k).Val(); ttl <= time.Hour || ttl > time.Hour+time.Hour/16 {
			t.Fatalf("%s ttl %v after an append with 30m left, want renewed to 1h to 1h+1h/16", k, ttl)
		}
	}
}

func TestStore_ScriptBatchesKeepDeviceOrder(t *testing.T) {
	t.Parallel()
	srv := streamstest.StartRedis(t)
	for _, batch := range []int{1, 7, 32} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			rdb := srv.Client(t)
			if err := rdb.FlushAll(testCtx(t)).Err(); err != nil {
				t.Fatal(err)
			}
			s := New(rdb, Config{ScriptBatch: batch})
			checkBatches(t, s)
		})
	}
	// A client that may shard keys (here a one-shard ring, as a cluster
	// client would) always gets one device per call.
	t.Run("ring", func(t *testing.T) {
		ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"one": srv.Addr()}, ContextTimeoutEnabled: true})
		t.Cleanup(func() { _ = ring.Close() })
		if err := ring.FlushAll(testCtx(t)).Err(); err != nil {
			t.Fatal(err)
		}
		s := New(ring, Config{ScriptBatch: 32})
		if s.batch != 1 {
			t.Fatalf("batch %d on a ring client, want 1", s.batch)
		}
		checkBatches(t, s)
	})
}

// checkBatches appends to 40 devices, one of them listed twice, and acks a
// mix of valid and stale requests: results must line up with the requests
// whatever the batch size.
func checkBatches(t *testing.T, s *Store) {
	t.Helper()
	ctx := testCtx(t)
	var devices []string
	for i := 0; i < 40; i++ {
		devices = append(devices, fmt.Sprintf("d%02d", i))
	}
	// d00 gets one message first, so its seq differs from the others'.
	if _, err := s.Append(ctx, msg("first"), devices[:1]); err != nil {
		t.Fatal(err)
	}
	// d05's repeat lands in another script call, d39's in the same one.
	list := append(append([]string{}, devices...), "d05", "d39")
	res, err := s.Append(ctx, msg("m"), list)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(list) {
		t.Fatalf("%d results for %d devices", len(res), len(list))
	}
	for i, r := range res {
		want := uint64(1)
		if r.Device == "d00" {
			want = 2
		}
		if r.Device != list[i] || r.Seq != want || r.Duplicate != (i >= len(devices)) {
			t.Fatalf("result %d: %+v, want device %s seq %d", i, r, list[i], want)
		}
	}
	var reqs []AckRequest
	for i, r := range res[:len(devices)] {
		seq := r.Seq
		if i%3 == 0 {
			seq += 5 // beyond last: ignored
		}
		reqs = append(reqs, AckRequest{Device: r.Device, Epoch: r.Epoch, Seq: seq})
	}
	applied, err := s.AckMany(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, ok := range applied {
		if ok != (i%3 != 0) {
			t.Fatalf("ack %d (%+v) applied=%v", i, reqs[i], ok)
		}
	}
}

func TestStore_AppendStartsCleanWhenOnlyMetaIsLost(t *testing.T) {
	t.Parallel()
	// The keys share their expiry, but an operator's DEL (or eviction under
	// maxmemory) can drop the meta alone. The next append must start a new
	// epoch on an empty inbox and dedupe set, not collide with old ids.
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	old := appendN(t, env.store, "a", "m", 3)
	mustDo(t, env.rdb.Del(ctx, metaKey("a")))
	res, err := env.store.Append(ctx, msg("m-1"), []string{"a"})
	if err != nil || res[0].Seq != 1 || res[0].Duplicate || res[0].Epoch == old.Epoch {
		t.Fatalf("append after the meta vanished: %+v %v", res, err)
	}
	r := mustResume(t, env.store, "a", Position{Epoch: res[0].Epoch}, 0)
	if !r.Recovered || !equalSeqs(seqs(r.Entries), 1) || r.Entries[0].ID != "m-1" {
		t.Fatalf("resume in the new epoch: %+v", r)
	}
}

func TestStore_AppendStartsOverWhenStreamIsAheadOfMeta(t *testing.T) {
	t.Parallel()
	// A meta counter behind its stream (keys edited by hand, a partial
	// restore) must not make appends fail forever or reuse seqs: the device
	// starts a new epoch.
	env := newEnv(t, Config{})
	ctx := testCtx(t)
	old := appendN(t, env.store, "a", "m", 3)
	mustDo(t, env.rdb.HSet(ctx, metaKey("a"), "l", 1))
	res, err := env.store.Append(ctx, msg("new"), []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Seq != 1 || r.Duplicate || r.Epoch == old.Epoch {
		t.Fatalf("append to the inconsistent device: %+v", r)
	}
	if r := res[1]; r.Seq != 1 || r.Duplicate {
		t.Fatalf("append to the healthy device in the same call: %+v", r)
	}
	r := mustResume(t, env.store, "a", Position{Epoch: old.Epoch, Seq: 3}, 0)
	if r.Recovered || r.Epoch != res[0].Epoch || !equalSeqs(seqs(r.Entries), 1) || r.Entries[0].ID != "new" {
		t.Fatalf("resume from the old epoch: %+v", r)
	}
	again, err := env.store.Append(ctx, msg("new"), []string{"a"})
	if err != nil || !again[0].Duplicate || again[0].Seq != 1 {
		t.Fatalf("retry after the restart of the epoch: %+v %v", again, err)
	}
}

func TestStore_AppendRefusesExpiredMessages(t *testing.T) {
	t.Parallel()
	// A message whose TTL ran out before it arrived (delayed in another
	// region, say) would only burn a seq and show up as a gap.
	env := newEnv(t, Config{})
	m := msg("late")
	m.Created, m.TTL = time.Now().Add(-time.Minute), time.Second
	if _, err := env.store.Append(testCtx(t), m, []string{"a"}); !errors.Is(err, ErrExpired) {
		t.Fatalf("append of an expired message: %v, want ErrExpired", err)
	}
	if n := dbSize(t, env.rdb); n != 0 {
		t.Fatalf("refused append wrote %d keys", n)
	}
}

// appendShortLived appends m (with a short TTL) to device and waits until
// it has expired.
func appendShortLived(t *testing.T, s *Store, m Message, device string) {
	t.Helper()
	if _, err := s.Append(testCtx(t), m, []string{device}); err != nil {
		t.Fatal(err)
	}
	waitExpired(t, s, device, m)
}

// waitExpired polls until the entries of msgs in device's inbox are past
// their Expires, by the store's own reading of them.
func waitExpired(t *testing.T, s *Store, device string, msgs ...Message) {
	t.Helper()
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[m.ID] = true
	}
	var latest time.Time
	rows, err := s.rdb.XRange(testCtx(t), inboxKey(device), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if id, _ := r.Values["i"].(string); ids[id] {
			exp := parseMillis(r.Values["x"].(string))
			if exp.After(latest) {
				latest = exp
			}
		}
	}
	if latest.IsZero() {
		t.Fatalf("no entries for %v in %s", msgs, device)
	}
	poll.Until(t, 5*time.Second, func() error {
		if !time.Now().After(latest) {
			return fmt.Errorf("entries expire at %v", latest)
		}
		return nil
	})
}

// TestStore_AppendManyStoresInOrderInOneCall appends several messages in
// one call: each device's inbox gets them in the order given, a message
// refused on its own (expired) stores nothing and leaves the others be,
// and the whole call sent again stores nothing new.
func TestStore_AppendManyStoresInOrderInOneCall(t *testing.T) {
	t.Parallel()
	env := newEnv(t, Config{ScriptBatch: 2})
	ctx := testCtx(t)
	expired := msg("old")
	expired.Created, expired.TTL = time.Now().Add(-time.Hour), time.Minute
	reqs := []AppendRequest{
		{Msg: msg("m1"), Devices: []string{"a", "b", "c"}},
		{Msg: expired, Devices: []string{"a"}},
		{Msg: msg("m2"), Devices: []string{"c", "a"}},
		{Msg: msg("m3"), Devices: []string{"a"}},
		{Msg: msg("bad{id}"), Devices: []string{"a"}},
	}
	res, err := env.store.AppendMany(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[1].Err, ErrExpired) || !errors.Is(res[4].Err, ErrInvalidArgument) || res[1].Appended != nil {
		t.Fatalf("refused requests: %+v, %+v", res[1], res[4])
	}
	seqs := func(r AppendResult) (out []uint64) {
		for _, a := range r.Appended {
			out = append(out, a.Seq)
		}
		return out
	}
	if got := [][]uint64{seqs(res[0]), seqs(res[2]), seqs(res[3])}; fmt.Sprint(got) != "[[1 1 1] [2 2] [3]]" {
		t.Fatalf("seqs %v", got)
	}
	read, err := env.store.Resume(ctx, "a", Position{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range read.Entries {
		ids = append(ids, e.ID)
	}
	if fmt.Sprint(ids) != "[m1 m2 m3]" {
		t.Fatalf("device a's inbox holds %v", ids)
	}
	again, err := env.store.AppendMany(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2, 3} {
		for _, a := range again[i].Appended {
			if !a.Duplicate {
				t.Fatalf("request %d sent again: %+v not a duplicate", i, a)
			}
		}
	}
}
