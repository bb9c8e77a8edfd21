package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Push API types, as documented in docs/push-api.md.

// PushRequest is the body of POST /v1/push. Exactly one of Devices, Users,
// Group and Broadcast, and exactly one of Data and DataBase64, must be
// set; Filter goes with Group or Broadcast only. The
// optional fields are pointers so that absent and empty differ: the
// server refuses an empty string rather than read it as the default, and
// a nil pointer is left out of the JSON. Ptr makes one from a value.
type PushRequest struct {
	App       *string  `json:"app,omitempty"`
	Devices   []string `json:"devices,omitempty"`
	Users     []string `json:"users,omitempty"`
	Group     *string  `json:"group,omitempty"`
	Broadcast bool     `json:"broadcast,omitempty"`
	Filter    *Filter  `json:"filter,omitempty"`
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

// Filter narrows a group or broadcast push to the sessions that match
// every criterion given: a platform listed, a version one of Versions
// matches, a business listed among those the session declared (or a
// session that declared none), a tag listed among the session's token's.
// An absent or empty list does not narrow.
type Filter struct {
	Platforms  []string       `json:"platforms,omitempty"`
	Versions   []VersionMatch `json:"versions,omitempty"`
	Businesses []string       `json:"businesses,omitempty"`
	Tags       []string       `json:"tags,omitempty"`
}

// VersionMatch matches a session's HELLO version: by Prefix, or by a
// range from Min to Max, both inclusive and either open, compared part by
// part (numerically where both parts are numbers).
type VersionMatch struct {
	Prefix *string `json:"prefix,omitempty"`
	Min    *string `json:"min,omitempty"`
	Max    *string `json:"max,omitempty"`
}

// Ptr returns a pointer to v, for the optional fields of requests.
func Ptr[T any](v T) *T { return &v }

// Per-device push statuses.
const (
	StatusDelivered = "delivered"
	StatusStored    = "stored"
	StatusRejected  = "rejected"
)

// PushResult is one device's outcome. User is set in the answer to a
// push to users: the user the device belongs to (a user with no device
// has one result, without a device, rejected with no_devices).
type PushResult struct {
	User      string `json:"user,omitempty"`
	Device    string `json:"device,omitempty"`
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

// PushResponse answers POST /v1/push. Results is set for device and user
// pushes; Recipients (sessions on the node asked) and OtherNodes (the
// other live nodes whose delivery streams the message was written to) for
// group and broadcast pushes, and GroupEpoch and GroupSeq, the message's
// place in its group's catch-up stream, for a group that keeps one — all
// only when the push named this region. Bridged says, per other region
// named, whether the message is on its way there (BridgedQueued) or not
// (BridgedFailed).
type PushResponse struct {
	ID         string            `json:"id"`
	Stored     bool              `json:"stored"`
	Results    []PushResult      `json:"results,omitempty"`
	Recipients *int              `json:"recipients,omitempty"`
	OtherNodes *int              `json:"other_nodes,omitempty"`
	GroupEpoch string            `json:"group_epoch,omitempty"`
	GroupSeq   uint64            `json:"group_seq,omitempty"`
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

// UserState answers GET /v1/users/{user}: the devices a push to the user
// reaches and the user's groups.
type UserState struct {
	App     string       `json:"app"`
	User    string       `json:"user"`
	Devices []UserDevice `json:"devices"`
	Groups  []string     `json:"groups"`
}

// UserDevice is one device of a user.
type UserDevice struct {
	Device   string       `json:"device"`
	LastSeen time.Time    `json:"last_seen"` // its last handshake as the user
	Online   bool         `json:"online"`
	Route    *DeviceRoute `json:"route,omitempty"`
}

// User returns the state of one user of app.
func (c *Client) User(ctx context.Context, app, user string) (*UserState, error) {
	var st UserState
	q := url.Values{"app": {app}}
	if err := c.Do(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(user), q, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Group membership operations (GroupMembersRequest.Op).
const (
	OpAdd    = "add"
	OpRemove = "remove"
)

// GroupMembersRequest is the body of POST /v1/groups/{group}/members:
// Op "add" or "remove", and the devices and users it applies to (at most
// max_targets in all).
type GroupMembersRequest struct {
	App     *string  `json:"app,omitempty"`
	Op      *string  `json:"op,omitempty"`
	Devices []string `json:"devices,omitempty"`
	Users   []string `json:"users,omitempty"`
}

// Per-member results of POST /v1/groups/{group}/members.
const (
	MemberAdded     = "added"
	MemberAlready   = "already"
	MemberRemoved   = "removed"
	MemberNotMember = "not_member"
	MemberRejected  = "rejected"
)

// GroupMemberResult is one member's outcome: Device or User names it.
type GroupMemberResult struct {
	Device string `json:"device,omitempty"`
	User   string `json:"user,omitempty"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Sessions is how many of the member's open sessions were told (a
	// device has at most one; a user one per connected device).
	Sessions int `json:"sessions,omitempty"`
}

// GroupMembersResponse answers POST /v1/groups/{group}/members.
type GroupMembersResponse struct {
	App     string              `json:"app"`
	Group   string              `json:"group"`
	Results []GroupMemberResult `json:"results"`
}

// ChangeGroupMembers adds or removes members of a group.
func (c *Client) ChangeGroupMembers(ctx context.Context, group string, req *GroupMembersRequest) (*GroupMembersResponse, error) {
	var resp GroupMembersResponse
	if err := c.Do(ctx, http.MethodPost, "/v1/groups/"+url.PathEscape(group)+"/members", nil, req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// GroupMember is a member as GET /v1/groups/{group}/members lists it:
// Device or User.
type GroupMember struct {
	Device string `json:"device,omitempty"`
	User   string `json:"user,omitempty"`
}

// GroupStream is a group's catch-up stream; MaxLen 0 means the group
// keeps none. MaxAge is a Go duration ("5m").
type GroupStream struct {
	MaxLen  int64  `json:"max_len"`
	MaxAge  string `json:"max_age,omitempty"`
	Epoch   string `json:"epoch,omitempty"`
	Last    uint64 `json:"last,omitempty"`
	Trimmed uint64 `json:"trimmed,omitempty"`
}

// GroupState answers GET /v1/groups/{group}/members: the group's size, a
// page of members, the cursor of the next page ("" after the last) and
// its catch-up stream.
type GroupState struct {
	App        string        `json:"app"`
	Group      string        `json:"group"`
	Size       int64         `json:"size"`
	Members    []GroupMember `json:"members"`
	NextCursor string        `json:"next_cursor,omitempty"`
	Stream     GroupStream   `json:"stream"`
}

// Group reads a group's size, a page of about count members (0: the
// server's default) from cursor ("" for the first page), and its stream.
func (c *Client) Group(ctx context.Context, app, group, cursor string, count int) (*GroupState, error) {
	var st GroupState
	q := url.Values{"app": {app}}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if count > 0 {
		q.Set("count", strconv.Itoa(count))
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/groups/"+url.PathEscape(group)+"/members", q, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// GroupStreamRequest is the body of POST /v1/groups/{group}/stream:
// MaxLen 1 to 1,000 messages and MaxAge 1 s to 24 h (a Go duration) turn
// the group's catch-up stream on or change its bounds; MaxLen 0 turns it
// off.
type GroupStreamRequest struct {
	App    *string `json:"app,omitempty"`
	MaxLen *int64  `json:"max_len,omitempty"`
	MaxAge *string `json:"max_age,omitempty"`
}

// SetGroupStream turns a group's catch-up stream on or off.
func (c *Client) SetGroupStream(ctx context.Context, group string, req *GroupStreamRequest) (*GroupStream, error) {
	var st GroupStream
	if err := c.Do(ctx, http.MethodPost, "/v1/groups/"+url.PathEscape(group)+"/stream", nil, req, &st); err != nil {
		return nil, err
	}
	return &st, nil
}
