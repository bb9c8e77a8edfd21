package api

import (
	"context"
	"time"
)

// Bridge types of the admin API (docs/admin-api.md, "Bridge"): the Kafka
// bridge between regions as each node runs it.

// BridgeStatus is one node's bridge: its producer's buffer, what it sent
// to each other region, what it consumed from each, and the partitions
// it holds in its region's consumer group.
type BridgeStatus struct {
	// Region is this region; Peers the other regions the bridge knows.
	Region string   `json:"region"`
	Peers  []string `json:"peers"`
	// Brokers are the Kafka seed brokers; Topic the topic this region
	// produces to; Group this region's consumer group.
	Brokers []string `json:"brokers"`
	Topic   string   `json:"topic"`
	Group   string   `json:"group"`
	// Buffer is the producer's buffer: records (and their bytes) queued
	// and not yet acknowledged by Kafka, and its bounds.
	Buffer BridgeBuffer `json:"buffer"`
	// To has one entry per other region: the pushes exported to it.
	To []BridgeExport `json:"to"`
	// From has one entry per topic consumed: the records read from it.
	From []BridgeImport `json:"from"`
	// Partitions are the partitions this node consumes right now.
	Partitions []BridgePartition `json:"partitions"`
	// Errors counts connect, group, produce, fetch, import and commit
	// errors; LastError is the newest ("kind: error"), at LastErrorAt.
	Errors      uint64    `json:"errors"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// BridgeBuffer is the bridge producer's bounded buffer.
type BridgeBuffer struct {
	Records    int64 `json:"records"`
	MaxRecords int64 `json:"max_records"`
	Bytes      int64 `json:"bytes"`
	MaxBytes   int64 `json:"max_bytes"`
}

// BridgeExport counts the pushes exported to one region: Queued were
// taken into the buffer (answered "queued"), Failed were not (answered
// "failed"); Buffered is the records for the region in the buffer now;
// Produced and ProduceErrors count the records Kafka acknowledged and
// those it failed for good.
type BridgeExport struct {
	Region        string `json:"region"`
	Buffered      int64  `json:"buffered"`
	Queued        uint64 `json:"queued"`
	Failed        uint64 `json:"failed"`
	Produced      uint64 `json:"produced"`
	ProduceErrors uint64 `json:"produce_errors"`
}

// BridgeImport counts the records consumed from one topic (Region is
// the region producing to it): Imported went to this region's devices,
// Skipped were for other regions (decided on their headers alone),
// Dropped were for this region but not delivered (shed by degrade,
// expired, unknown app: see the metrics for why), Invalid could not be
// decoded. Lag is the records not yet consumed in the partitions this
// node holds; LastOffset the highest offset committed among them.
type BridgeImport struct {
	Topic      string `json:"topic"`
	Region     string `json:"region,omitempty"`
	Consumed   uint64 `json:"consumed"`
	Imported   uint64 `json:"imported"`
	Skipped    uint64 `json:"skipped"`
	Dropped    uint64 `json:"dropped"`
	Invalid    uint64 `json:"invalid"`
	Lag        int64  `json:"lag"`
	LastOffset int64  `json:"last_offset"`
}

// BridgePartition is one partition a node consumes: the offset its
// group committed (the next record to read; -1 before the first
// commit), the partition's high watermark at the last fetch, and the lag
// between the records consumed and that watermark.
type BridgePartition struct {
	Topic         string `json:"topic"`
	Partition     int32  `json:"partition"`
	Committed     int64  `json:"committed"`
	HighWatermark int64  `json:"high_watermark"`
	Lag           int64  `json:"lag"`
}

// BridgeNode is one member's bridge in BridgeRegion: nil Bridge and
// Alive false when it did not answer within a second, nil Bridge and
// Alive true when it runs no bridge.
type BridgeNode struct {
	ID     string        `json:"id"`
	Alive  bool          `json:"alive"`
	Bridge *BridgeStatus `json:"bridge,omitempty"`
}

// BridgeRegion answers GET /v1/admin/bridge: every member's bridge.
type BridgeRegion struct {
	Region string       `json:"region"`
	Nodes  []BridgeNode `json:"nodes"`
}

// Bridge returns the bridge of every member of the region.
func (c *Client) Bridge(ctx context.Context) (*BridgeRegion, error) {
	var st BridgeRegion
	if err := c.read(ctx, "/v1/admin/bridge", &st); err != nil {
		return nil, err
	}
	return &st, nil
}
