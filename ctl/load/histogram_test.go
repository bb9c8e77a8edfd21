package load

import (
	"encoding/json"
	"testing"
	"time"
)

func TestHistogram_Latency(t *testing.T) {
	t.Parallel()
	var h Histogram
	if got := h.Latency(); got != (Latency{}) {
		t.Errorf("empty: %+v", got)
	}
	for _, d := range []time.Duration{5 * time.Millisecond, 1 * time.Millisecond, 1500 * time.Microsecond} {
		h.Record(d)
	}
	if got := h.Latency(); got != (Latency{P50: 1.5, P99: 5, Max: 5}) {
		t.Errorf("three: %+v", got)
	}
	var hundred Histogram
	for i := 100; i >= 1; i-- {
		hundred.Record(time.Duration(i) * time.Millisecond)
	}
	if got := hundred.Latency(); got != (Latency{P50: 50, P99: 99, Max: 100}) {
		t.Errorf("1..100: %+v", got)
	}
	// Sub-microsecond parts are dropped, as the report's precision is µs.
	var fine Histogram
	fine.Record(1234567 * time.Nanosecond)
	if got := fine.Latency(); got != (Latency{P50: 1.234, P99: 1.234, Max: 1.234}) {
		t.Errorf("µs precision: %+v", got)
	}
}

// TestHistogram_MergeAnswersAsOneRun splits 1..100 ms over three
// histograms, sends each through JSON as a worker would, and merges them:
// the quantiles are those of the whole.
func TestHistogram_MergeAnswersAsOneRun(t *testing.T) {
	t.Parallel()
	parts := make([]Histogram, 3)
	for i := 1; i <= 100; i++ {
		parts[i%3].Record(time.Duration(i) * time.Millisecond)
	}
	var sum Histogram
	// A tally holding a Histogram, as a worker would send it: by value.
	type tally struct {
		Latency Histogram `json:"latency"`
	}
	for i := range parts {
		b, err := json.Marshal(any(tally{Latency: parts[i]}))
		if err != nil {
			t.Fatal(err)
		}
		var back tally
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		sum.Merge(&back.Latency)
	}
	sum.Merge(nil)
	sum.Merge(&Histogram{})
	if sum.Count() != 100 {
		t.Fatalf("count %d", sum.Count())
	}
	if got := sum.Latency(); got != (Latency{P50: 50, P99: 99, Max: 100}) {
		t.Errorf("merged: %+v", got)
	}
	if got := sum.Quantile(0.9); got != 90*time.Millisecond {
		t.Errorf("p90 %s", got)
	}
	if err := json.Unmarshal([]byte(`{"us":[[1,-1]]}`), &sum); err == nil {
		t.Error("negative count accepted")
	}
}

func TestReasons_KeepsEightAndCountsTheRestAsOther(t *testing.T) {
	t.Parallel()
	var r Reasons
	for i := range 10 {
		r.Add(string(rune('a'+i)), i+1)
	}
	if len(r) != 9 || r["other"] != 9+10 || r.Count() != 55 {
		t.Fatalf("%v", r)
	}
	var m Reasons
	m.Merge(Reasons{"x": 2})
	m.Merge(Reasons{"x": 1, "y": 1})
	if got := m.String(); got != "1× y; 3× x" {
		t.Errorf("String() = %q", got)
	}
}
