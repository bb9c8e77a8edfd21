package tests

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/internal/poll"
)

// groupDevice is an SDK device of the test's app that records what it
// gets, connecting where connect says.
type groupDevice struct {
	id     string
	c      *client.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	got      []string
	catchUps []client.CatchUp
	cursors  map[string]client.GroupCursor
}

func runGroupDevice(t *testing.T, app appCreds, id, user string, dispatch func(context.Context, string) (string, error), cursors []client.GroupCursor) *groupDevice {
	t.Helper()
	secret, err := base64.StdEncoding.DecodeString(app.SecretBase64)
	if err != nil {
		t.Fatal(err)
	}
	d := &groupDevice{id: id, done: make(chan struct{}), cursors: map[string]client.GroupCursor{}}
	d.c, err = client.New(client.Config{
		Dispatch: dispatch, App: app.ID, Device: id,
		TokenFunc: func(context.Context) (string, error) {
			return token.Issue(token.Claims{App: app.ID, Device: id, User: user, KeyID: app.KeyID, Expires: time.Now().Add(time.Hour).Unix()}, secret)
		},
		GroupCursors: cursors,
		BackoffMin:   50 * time.Millisecond, BackoffMax: time.Second,
		OnMessage: func(m client.Message) { d.mu.Lock(); d.got = append(d.got, string(m.Payload)); d.mu.Unlock() },
		OnCatchUp: func(cu client.CatchUp) { d.mu.Lock(); d.catchUps = append(d.catchUps, cu); d.mu.Unlock() },
		OnGroupCursor: func(g client.GroupCursor) {
			d.mu.Lock()
			d.cursors[g.Group] = g
			d.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { defer close(d.done); _ = d.c.Run(ctx) }()
	t.Cleanup(d.stop)
	poll.Until(t, 20*time.Second, func() error {
		if !d.c.Connected() {
			return fmt.Errorf("%s not connected", id)
		}
		return nil
	})
	return d
}

func (d *groupDevice) stop() { d.cancel(); <-d.done }

func (d *groupDevice) waitFor(t *testing.T, want ...string) {
	t.Helper()
	poll.Until(t, 20*time.Second, func() error {
		d.mu.Lock()
		defer d.mu.Unlock()
		if !slices.Equal(d.got, want) {
			return fmt.Errorf("%s got %q, want %q", d.id, d.got, want)
		}
		return nil
	})
}

// at connects to one node only.
func at(n *node) func(context.Context, string) (string, error) {
	return func(context.Context, string) (string, error) { return "ws://" + n.addr("ws") + "/v1/ws", nil }
}

func mustCall(t *testing.T, what string, code int, raw []byte) []byte {
	t.Helper()
	if code != http.StatusOK {
		t.Fatalf("%s: HTTP %d %s", what, code, raw)
	}
	return raw
}

// Users and groups on three pushd processes: a push to a user reaches its
// devices on two nodes and the one offline when it connects, each once;
// a group's membership and catch-up stream survive its member's node
// being killed, the member reconnecting elsewhere and catching up on what
// was pushed meanwhile.
func TestRegion_UsersAndGroupsAcrossProcesses(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs three pushd processes and kills one")
	}
	nodes, adminTok, _ := startRegion(t)
	app := createApp(t, nodes[0], adminTok, "social")
	push := func(n *node, body map[string]any) map[string]any {
		t.Helper()
		body["app"] = app.ID
		code, raw := pushAs(t, n, app.APIKey, body)
		var out map[string]any
		_ = json.Unmarshal(mustCall(t, fmt.Sprint("push ", body), code, raw), &out)
		return out
	}
	groups := func(n *node, group, what string, body map[string]any) {
		t.Helper()
		body["app"] = app.ID
		code, raw := call(t, &http.Client{Timeout: 10 * time.Second}, http.MethodPost, fmt.Sprintf("http://%s/v1/groups/%s/%s", n.addr("push"), group, what), app.APIKey, body)
		mustCall(t, what+" "+group, code, raw)
	}
	phone := runGroupDevice(t, app, "phone", "alice", at(nodes[0]), nil)
	tablet := runGroupDevice(t, app, "tablet", "alice", at(nodes[1]), nil)
	laptop := runGroupDevice(t, app, "laptop", "alice", at(nodes[2]), nil)
	laptop.stop()

	out := push(nodes[2], map[string]any{"users": []string{"alice"}, "data": "for alice"})
	if out["stored"] != true || len(out["results"].([]any)) != 3 {
		t.Fatalf("push to alice: %v", out)
	}
	phone.waitFor(t, "for alice")
	tablet.waitFor(t, "for alice")
	laptop = runGroupDevice(t, app, "laptop", "alice", at(nodes[1]), nil)
	laptop.waitFor(t, "for alice")

	// A group with a catch-up stream; the phone joins through its user,
	// the tablet as a device.
	groups(nodes[1], "room", "stream", map[string]any{"max_len": 100, "max_age": "1h"})
	groups(nodes[2], "room", "members", map[string]any{"op": "add", "users": []string{"alice"}})
	push(nodes[1], map[string]any{"group": "room", "data": "g1"})
	for _, d := range []*groupDevice{phone, tablet, laptop} {
		d.waitFor(t, "for alice", "g1")
	}
	phone.mu.Lock()
	cursor := phone.cursors["room"]
	phone.mu.Unlock()
	if cursor.Seq != 1 {
		t.Fatalf("phone's cursor of room after g1: %+v", cursor)
	}

	// The phone's node dies; two group messages go out while the phone
	// is away; it comes back on another node with its cursor.
	phone.stop()
	nodes[0].stop(syscall.SIGKILL)
	push(nodes[2], map[string]any{"group": "room", "data": "g2"})
	push(nodes[1], map[string]any{"group": "room", "data": "g3"})
	phone = runGroupDevice(t, app, "phone", "alice", at(nodes[2]), []client.GroupCursor{cursor})
	phone.waitFor(t, "g2", "g3")
	poll.Until(t, 10*time.Second, func() error {
		phone.mu.Lock()
		defer phone.mu.Unlock()
		if len(phone.catchUps) != 1 || !phone.catchUps[0].Recovered || phone.catchUps[0].Seq != 3 {
			return fmt.Errorf("phone's catch-ups %+v", phone.catchUps)
		}
		return nil
	})
	// Live again, without a JOIN: the membership is the business's.
	push(nodes[1], map[string]any{"group": "room", "data": "g4"})
	phone.waitFor(t, "g2", "g3", "g4")
	tablet.waitFor(t, "for alice", "g1", "g2", "g3", "g4")
}
