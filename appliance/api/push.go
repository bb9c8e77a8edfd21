package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
)

// Push API types, as documented in docs/push-api.md.

// PushRequest is the body of POST /v1/push. Exactly one of Devices, Group
// and Broadcast, and exactly one of Data and DataBase64, must be set. The
// optional fields are pointers so that absent and empty differ: the
// server refuses an empty string rather than read it as the default, and
// a nil pointer is left out of the JSON. Ptr makes one from a value.
type PushRequest struct {
	App       *string  `json:"app,omitempty"`
	Devices   []string `json:"devices,omitempty"`
	Group     *string  `json:"group,omitempty"`
	Broadcast bool     `json:"broadcast,omitempty"`
	Business  *string  `json:"business,omitempty"`
	Priority  *string  `json:"priority,omitempty"`
	// TTL is in seconds; nil means the server's default.
	TTL            *int64  `json:"ttl,omitempty"`
	Data           *string `json:"data,omitempty"`
	DataBase64     *string `json:"data_base64,omitempty"`
	IdempotencyKey *string `json:"idempotency_key,omitempty"`
	// Regions are the regions the message goes to; nil means this
	// region only.
	Regions *Regions `json:"regions,omitempty"`
}

// Regions is the regions field of a push: "all" (every region the
// region's bridge knows, this one included) or a list of region names.
// In JSON it is the string "all" or an array of strings.
type Regions struct {
	All  bool
	List []string
}

// AllRegions is "regions": "all".
func AllRegions() *Regions { return &Regions{All: true} }

// RegionList is "regions": [names...].
func RegionList(names ...string) *Regions { return &Regions{List: names} }

// RegionsAll is the one string the regions field takes.
const RegionsAll = "all"

// MarshalJSON writes "all" or the list.
func (r Regions) MarshalJSON() ([]byte, error) {
	if r.All {
		return json.Marshal(RegionsAll)
	}
	if r.List == nil {
		return []byte("[]"), nil
	}
	return json.Marshal(r.List)
}

// UnmarshalJSON reads "all" or an array of strings.
func (r *Regions) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s != RegionsAll {
			return errors.New(`regions: a string must be "all"; name regions in an array, e.g. ["sh"]`)
		}
		*r = Regions{All: true}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil || list == nil {
		return errors.New(`regions: want "all" or an array of region names`)
	}
	*r = Regions{List: list}
	return nil
}

// Ptr returns a pointer to v, for the optional fields of requests.
func Ptr[T any](v T) *T { return &v }

// Per-device push statuses.
const (
	StatusDelivered = "delivered"
	StatusStored    = "stored"
	StatusRejected  = "rejected"
)

// PushResult is one device's outcome.
type PushResult struct {
	Device    string `json:"device"`
	Status    string `json:"status"`
	Seq       uint64 `json:"seq,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

// Accepted reports whether the message is in the device's inbox or on its
// way to its session.
func (r PushResult) Accepted() bool {
	return r.Status == StatusDelivered || r.Status == StatusStored
}

// PushResponse answers POST /v1/push. Results is set for device pushes;
// Recipients (sessions on the node asked) and OtherNodes (the other live
// nodes whose delivery streams the message was written to) for group and
// broadcast pushes — all three only when the push named this region.
// Bridged says, per other region named, whether the message is on its
// way there (BridgedQueued) or not (BridgedFailed).
type PushResponse struct {
	ID         string            `json:"id"`
	Stored     bool              `json:"stored"`
	Results    []PushResult      `json:"results,omitempty"`
	Recipients *int              `json:"recipients,omitempty"`
	OtherNodes *int              `json:"other_nodes,omitempty"`
	Bridged    map[string]string `json:"bridged,omitempty"`
}

// Bridged statuses: per other region, in PushResponse.Bridged.
const (
	// BridgedQueued: the message is in this node's bridge buffer, on its
	// way to Kafka and the region.
	BridgedQueued = "queued"
	// BridgedFailed: the message will not reach the region (the bridge
	// buffer is full, or the bridge is stopping); nothing was queued for
	// it. A retry with the same idempotency key is safe.
	BridgedFailed = "failed"
)

// Push sends one message.
func (c *Client) Push(ctx context.Context, req *PushRequest) (*PushResponse, error) {
	var resp PushResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/push", nil, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// DeviceRoute is where a device's session lives.
type DeviceRoute struct {
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
}

// DeviceState answers GET /v1/devices/{device}.
type DeviceState struct {
	App    string       `json:"app"`
	Device string       `json:"device"`
	Online bool         `json:"online"`
	Route  *DeviceRoute `json:"route,omitempty"`
	// Epoch is the inbox epoch; Last the newest sequence number assigned,
	// Acked the device's ack cursor, InboxLen the unacked entries held.
	Epoch    string `json:"epoch"`
	Last     uint64 `json:"last"`
	Acked    uint64 `json:"acked"`
	Lost     uint64 `json:"lost"`
	InboxLen int64  `json:"inbox_len"`
}

// Device returns the state of one device of app.
func (c *Client) Device(ctx context.Context, app, device string) (*DeviceState, error) {
	var st DeviceState
	q := url.Values{"app": {app}}
	if err := c.Do(ctx, http.MethodGet, "/v1/devices/"+url.PathEscape(device), q, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Health answers GET /healthz on every listener of a node: 200 with
// status "ok", or 503 with "starting" (its region metadata not caught up
// yet) or "degraded" (Redis unreachable since Since). AtCapacity says the
// node takes no new device right now, which is no reason to take it out
// of service.
type Health struct {
	Status     string `json:"status"`
	Reason     string `json:"reason,omitempty"`
	Redis      string `json:"redis,omitempty"`
	Since      string `json:"since,omitempty"`
	AtCapacity bool   `json:"at_capacity"`
}

// Dispatch answers GET /v1/dispatch?app=A&device=D on a node's device
// port: the node the device should connect to, and its URLs.
type Dispatch struct {
	Node   string `json:"node"`
	WSURL  string `json:"ws_url"`
	TCPURL string `json:"tcp_url,omitempty"`
}
