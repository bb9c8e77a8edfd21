package appliance

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	dto "github.com/prometheus/client_model/go"

	"github.com/pushd/pushd/appliance/api"

	"github.com/pushd/pushd/appliance/wire"
)

// metrics holds the node's Prometheus instruments. Per-frame counters are
// resolved once into arrays indexed by frame type, so the hot path is an
// atomic add, never a label lookup. Connection counts are read at scrape
// time from the transports' counters.
type metrics struct {
	handshakes  *prometheus.CounterVec
	refused     *prometheus.CounterVec
	framesIn    [256]prometheus.Counter
	framesOut   [256]prometheus.Counter
	bytesIn     prometheus.Counter
	bytesOut    prometheus.Counter
	closes      [closeReasonCount]prometheus.Counter
	fanout      prometheus.Histogram
	fanoutSends prometheus.Counter
	retransmits prometheus.Counter

	upstreamFailures *prometheus.CounterVec

	pushes               *prometheus.CounterVec
	ackRetries           prometheus.Counter
	routeReleasesDropped prometheus.Counter
	entryErrors          prometheus.Counter
	takenOver            prometheus.Counter
	takeoverForwarded    prometheus.Counter
	resyncs              prometheus.Counter
	degradeShed          prometheus.Counter
	businessSkipped      prometheus.Counter
	redisErrors          *prometheus.CounterVec
	routesLost           prometheus.Counter
	entriesRecovered     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, n *Node) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		handshakes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_handshakes_total",
			Help: "Device handshakes by outcome: ok, or the error code name that refused them.",
		}, []string{"outcome"}),
		refused: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_connects_refused_total",
			Help: "Connections refused before a session existed, by reason (rate_limited, origin_forbidden, capacity).",
		}, []string{"reason"}),
		bytesIn: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_device_bytes_in_total", Help: "Bytes of frames received from devices.",
		}),
		bytesOut: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_device_bytes_out_total", Help: "Bytes written to devices (frames and batches).",
		}),
		fanout: f.NewHistogram(prometheus.HistogramOpts{
			Name:                        "pushd_fanout_duration_seconds",
			Help:                        "Time to hand one round of a group or broadcast (its messages that arrived together) to every recipient session.",
			Buckets:                     []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
			NativeHistogramBucketFactor: 1.1,
		}),
		fanoutSends: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_fanout_recipients_total", Help: "Sessions handed a group or broadcast frame.",
		}),
		upstreamFailures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_upstream_failures_total", Help: "UP frames whose webhook call failed, by business.",
		}, []string{"business"}),
		pushes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_pushes_total", Help: "Per-device push results: delivered, stored or rejected.",
		}, []string{"status"}),
		ackRetries: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_ack_retries_total", Help: "Device acks whose write to Redis failed and was retried.",
		}),
		routeReleasesDropped: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_route_releases_dropped_total", Help: "Closed sessions whose route was left to expire.",
		}),
		entryErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_delivery_entry_errors_total", Help: "Delivery entries (node to node) that failed to be written to another node's delivery stream or to be decoded from this node's.",
		}),
		takenOver: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_takeover_entries_total", Help: "Delivery entries claimed from dead nodes.",
		}),
		takeoverForwarded: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_takeover_forwarded_total",
			Help: "Targets of delivery entries taken over from a node presumed dead, passed on to the live node holding their connection (the node had stalled, not died).",
		}),
		resyncs: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_session_resyncs_total",
			Help: "Sessions made to re-read their inbox because Redis lost this node's heartbeat (a stall, a pause, or Redis data loss).",
		}),
		redisErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_redis_errors_total",
			Help: "Failed Redis calls by kind: timeout, connection, not_serving (loading, read-only, busy, a failover under way), not_replicated (a push the replicas did not confirm in time; these mark Redis down) or refused (a command Redis refused).",
		}, []string{"kind"}),
		entriesRecovered: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_delivery_entries_recovered_total",
			Help: "Delivery entries this node read before its last stop and never acked, applied at start.",
		}),
		routesLost: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_routes_lost_total",
			Help: "Sessions told to resync because their route was gone from Redis or named another connection when renewed.",
		}),
		degradeShed: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_degrade_shed_total", Help: "Stored messages queued for a device and dropped, not sent, because the region degrades their priority or business.",
		}),
		businessSkipped: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_business_skipped_total", Help: "Stored messages not sent to a session because its HELLO did not declare their business (the device sees a flagged gap).",
		}),
		retransmits: f.NewCounter(prometheus.CounterOpts{
			Name: "pushd_retransmits_total", Help: "PUSH frames resent because their ack was overdue.",
		}),
	}
	in := f.NewCounterVec(prometheus.CounterOpts{
		Name: "pushd_device_frames_in_total", Help: "Frames received from devices by type.",
	}, []string{"type"})
	out := f.NewCounterVec(prometheus.CounterOpts{
		Name: "pushd_device_frames_out_total", Help: "Frames queued to devices by type.",
	}, []string{"type"})
	for t := 0; t < 256; t++ {
		name := wire.Type(t).String()
		if t == 0 || t > int(wire.TypeCatchUp) {
			name = "unknown"
		}
		m.framesIn[t] = in.WithLabelValues(name)
		m.framesOut[t] = out.WithLabelValues(name)
	}
	closes := f.NewCounterVec(prometheus.CounterOpts{
		Name: "pushd_connection_closes_total",
		Help: "Device connections closed, by reason (slow_consumer and heartbeat_missed among them).",
	}, []string{"reason"})
	for r := closeReason(0); r < closeReasonCount; r++ {
		m.closes[r] = closes.WithLabelValues(r.String())
	}
	for _, k := range []transportKind{kindWS, kindTCP, kindConn} {
		f.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "pushd_connections",
			Help:        "Open device connections by transport.",
			ConstLabels: prometheus.Labels{"transport": k.String()},
		}, func() float64 { return float64(n.conns[k].Load()) })
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pushd_redis_up", Help: "1 while Redis is reachable; 0 since a call failed to reach it (pushd_redis_errors_total says why) and until one succeeds: the node serves live traffic only.",
	}, func() float64 {
		if n.RedisUp() {
			return 1
		}
		return 0
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pushd_sessions", Help: "Authenticated device sessions registered on this node.",
	}, func() float64 { return float64(n.hub.count.Load()) })
	if n.trace != nil {
		f.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushd_trace_bytes", Help: "Memory holding this node's trace events (at most --trace-memory).",
		}, func() float64 {
			b, _ := n.trace.memory()
			return float64(b)
		})
		f.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushd_trace_retained_seconds",
			Help: "Age of the oldest trace event this node still holds: how far back pushctl trace sees (at most --trace-ttl).",
		}, func() float64 {
			_, oldest := n.trace.memory()
			if oldest.IsZero() {
				return 0
			}
			return min(time.Since(oldest), n.cfg.TraceTTL).Seconds()
		})
	}
	return m
}

// counters reads the node's running totals from its metrics, for pushctl
// top: no counter is kept twice.
func (m *metrics) counters() api.NodeCounters {
	return api.NodeCounters{
		Time:             time.Now().UTC(),
		Handshakes:       counterValue(m.handshakes.WithLabelValues(wire.CodeOK.String())),
		Pushes:           counterValue(m.pushes.WithLabelValues(api.StatusDelivered)) + counterValue(m.pushes.WithLabelValues(api.StatusStored)),
		Deliveries:       counterValue(m.framesOut[wire.TypePush]),
		Acks:             counterValue(m.framesIn[wire.TypeAck]),
		Retransmits:      counterValue(m.retransmits),
		SlowConsumerCuts: counterValue(m.closes[closeSlow]),
	}
}

// counterValue reads a counter, through the interface Prometheus scrapes
// it with.
func counterValue(c prometheus.Counter) uint64 {
	var out dto.Metric
	if err := c.Write(&out); err != nil {
		return 0
	}
	return uint64(out.GetCounter().GetValue())
}
