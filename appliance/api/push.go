package api

import (
	"context"
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
// broadcast pushes.
type PushResponse struct {
	ID         string       `json:"id"`
	Stored     bool         `json:"stored"`
	Results    []PushResult `json:"results,omitempty"`
	Recipients *int         `json:"recipients,omitempty"`
	OtherNodes *int         `json:"other_nodes,omitempty"`
}

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
