package load

import (
	"context"
	"sync"
	"time"
)

// pollAcked asks every device that was sent stored messages for its ack
// cursor until each covers the newest one or Wait passes, and returns the
// cursors by device index. A bridge run asks the devices' region, where
// each device's fresh inbox numbers its messages 1…count.
func (s *Push) pollAcked(ctx context.Context, r *sendResult) ([]uint64, Reasons) {
	acked := make([]uint64, s.Devices)
	var why Reasons
	var pending []int
	state, want := s.API, func(d int) uint64 { return r.perDevice[d].maxSeq }
	if s.bridged != nil {
		state, want = s.bridged.state, func(d int) uint64 { return uint64(r.perDevice[d].count) }
	}
	for d := range r.perDevice {
		if want(d) > 0 {
			pending = append(pending, d)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.Wait)
	defer cancel()
	var lastErr error
	for len(pending) > 0 && ctx.Err() == nil {
		var mu sync.Mutex
		var next []int
		forEach(pending, s.Concurrency, func(d int) {
			st, err := state.Device(ctx, s.Target.App, s.Target.device(d))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if ctx.Err() == nil {
					lastErr = err
				}
				next = append(next, d)
				return
			}
			acked[d] = st.Acked
			if st.Acked < want(d) {
				next = append(next, d)
			}
		})
		pending = next
		if len(pending) > 0 {
			_ = sleepCtx(ctx, ackPollPause)
		}
	}
	if len(pending) > 0 && lastErr != nil {
		why.Add("ack poll: "+errorReason(lastErr), len(pending))
	}
	return acked, why
}

// verifyStored checks that every device's inbox accounts for what was
// accepted for it: nobody acks in stored mode and the device ids are
// fresh, so each accepted push is either in the inbox or was trimmed by
// the inbox cap, which the inbox records (its lost seq) and the device's
// next resume reports as a gap. Only what is in neither is lost.
func (s *Push) verifyStored(ctx context.Context, r *sendResult) (lost, trimmed int, why Reasons) {
	ctx, cancel := context.WithTimeout(ctx, s.Wait)
	defer cancel()
	var targets []int
	for d, pd := range r.perDevice {
		if pd.count > 0 {
			targets = append(targets, d)
		}
	}
	var mu sync.Mutex
	forEach(targets, s.Concurrency, func(d int) {
		st, err := s.API.Device(ctx, s.Target.App, s.Target.device(d))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			why.Add("verify: "+errorReason(err), 1)
			return
		}
		want := uint64(r.perDevice[d].count)
		trimmed += int(min(st.Lost, want))
		if covered := uint64(max(st.InboxLen, 0)) + st.Lost; covered < want {
			lost += int(want - covered)
		}
	})
	return lost, trimmed, why
}

// forEach runs f for every item with at most n running at once.
func forEach(items []int, n int, f func(int)) {
	ch := make(chan int)
	var wg sync.WaitGroup
	for range min(n, len(items)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				f(it)
			}
		}()
	}
	for _, it := range items {
		ch <- it
	}
	close(ch)
	wg.Wait()
}

// receipt is one message the SDK handed to the app in a push worker, as
// a worker streams it to the parent in "data" events.
type receipt struct {
	Device int    `json:"d"`
	ID     string `json:"id"`
	Sent   int64  `json:"s"` // unix nanos the parent put in the payload; 0 if unreadable
	At     int64  `json:"r"` // unix nanos of the handover
}

// receiptSummary is what the devices saw, against what was accepted.
type receiptSummary struct {
	received   int // accepted device-messages received at least once
	lost       int // accepted, never received
	duplicates int // receipts beyond the first of a device-message
	unexpected int // received, but not in any accepted answer (a failed request the server did store)
	latency    Histogram
	lastAt     int64 // unix nanos of the last first receipt of an accepted message
}

func summarizeReceipts(accepted map[msgKey]uint64, receipts []receipt) receiptSummary {
	var s receiptSummary
	seen := make(map[msgKey]int, len(receipts))
	for _, rc := range receipts {
		k := msgKey{id: rc.ID, device: rc.Device}
		seen[k]++
		if seen[k] > 1 {
			s.duplicates++
			continue
		}
		if _, ok := accepted[k]; !ok {
			s.unexpected++
			continue
		}
		s.received++
		if rc.Sent > 0 {
			s.latency.Record(time.Duration(rc.At - rc.Sent))
		}
		s.lastAt = max(s.lastAt, rc.At)
	}
	for k := range accepted {
		if seen[k] == 0 {
			s.lost++
		}
	}
	return s
}
