package load

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// Histogram counts durations at microsecond resolution. Histograms from
// several workers add up with Merge, and its quantiles are the exact
// nearest-rank values of the microseconds recorded, so a merged histogram
// answers as the whole run's samples would. The zero value is empty and
// ready; a Histogram is not safe for concurrent use.
//
// In JSON it is {"us":[[microseconds,count],…]}, ascending.
type Histogram struct {
	counts map[int64]int64 // microseconds → samples
	n      int64
}

// Record counts one sample.
func (h *Histogram) Record(d time.Duration) {
	if h.counts == nil {
		h.counts = map[int64]int64{}
	}
	h.counts[d.Microseconds()]++
	h.n++
}

// Merge adds o's samples.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make(map[int64]int64, len(o.counts))
	}
	for us, c := range o.counts {
		h.counts[us] += c
	}
	h.n += o.n
}

// Count is the number of samples.
func (h *Histogram) Count() int64 { return h.n }

// Quantile returns the nearest-rank q-quantile (0 < q ≤ 1): the smallest
// sample at least a fraction q of the samples are at or below. 0 when
// empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q*float64(h.n))) - 1
	rank = min(max(rank, 0), h.n-1)
	var seen int64
	keys := slices.Sorted(maps.Keys(h.counts))
	for _, us := range keys {
		seen += h.counts[us]
		if seen > rank {
			return time.Duration(us) * time.Microsecond
		}
	}
	return time.Duration(keys[len(keys)-1]) * time.Microsecond
}

// Latency summarizes the histogram as reports print it.
func (h *Histogram) Latency() Latency {
	if h.n == 0 {
		return Latency{}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return Latency{P50: ms(h.Quantile(0.50)), P99: ms(h.Quantile(0.99)), Max: ms(h.Quantile(1))}
}

type histogramJSON struct {
	US [][2]int64 `json:"us"`
}

// MarshalJSON encodes the histogram as {"us":[[microseconds,count],…]}.
// Its receiver is a value, so a Histogram inside a tally sent by value
// encodes too.
func (h Histogram) MarshalJSON() ([]byte, error) {
	j := histogramJSON{US: make([][2]int64, 0, len(h.counts))}
	for _, us := range slices.Sorted(maps.Keys(h.counts)) {
		j.US = append(j.US, [2]int64{us, h.counts[us]})
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes what MarshalJSON encodes, replacing h's samples.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var j histogramJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*h = Histogram{}
	for _, p := range j.US {
		if p[1] < 0 {
			return fmt.Errorf("histogram: negative count %d", p[1])
		}
		if h.counts == nil {
			h.counts = make(map[int64]int64, len(j.US))
		}
		h.counts[p[0]] += p[1]
		h.n += p[1]
	}
	return nil
}

// Latency is a latency distribution in milliseconds at microsecond
// precision: nearest-rank p50 and p99, and the max. All zero when nothing
// was measured.
type Latency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}
