package tests

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams/streamstest"
)

// startRegion runs three pushd processes around one redis-server, each
// with flags on every start, and returns them with the region's admin
// token and Redis URL.
func startRegion(t *testing.T, flags ...string) ([]*node, string, string) {
	t.Helper()
	return startRegionWith(t, plainRedis(t), flags...)
}

// regionRedis is the Redis a test region runs around and what its nodes
// are told to reach it.
type regionRedis struct {
	url string
	// flags go to every node on every start; bootstrap to the first
	// node's first start besides --bootstrap.
	flags, bootstrap []string
}

// plainRedis is a redis-server as a dev region has it: plain TCP, no
// password.
func plainRedis(t *testing.T) regionRedis {
	return regionRedis{url: streamstest.StartRedis(t).URL()}
}

// startRegionWith is startRegion around rr.
func startRegionWith(t *testing.T, rr regionRedis, flags ...string) ([]*node, string, string) {
	t.Helper()
	nodes, tok := startRegionAround(t, rr, flags...)
	return nodes, tok, rr.url
}

// startRegionOn runs three pushd processes with --redis redisURL (any
// topology), each with flags on every start, and returns them with the
// region's admin token once every node's dispatch knows all three.
func startRegionOn(t *testing.T, redisURL string, flags ...string) ([]*node, string) {
	t.Helper()
	return startRegionAround(t, regionRedis{url: redisURL}, flags...)
}

// startRegionAround is startRegionOn around rr.
func startRegionAround(t *testing.T, rr regionRedis, flags ...string) ([]*node, string) {
	t.Helper()
	nodes := []*node{newNode(t, "n1"), newNode(t, "n2"), newNode(t, "n3")}
	for _, n := range nodes {
		n.flags = append(append([]string(nil), flags...), rr.flags...)
	}
	redisURL := rr.url
	nodes[0].start(t, redisURL, append([]string{"--bootstrap"}, rr.bootstrap...)...)
	tok := adminToken(t, nodes[0])
	for _, n := range nodes[1:] {
		n.start(t, redisURL, joinArgs(t, nodes[0], tok)...)
	}
	poll.Until(t, 30*time.Second, func() error {
		st, err := status(t, nodes[0], tok)
		if err != nil {
			return err
		}
		alive := 0
		for _, s := range st.Nodes {
			if s.Alive {
				alive++
			}
		}
		if alive != 3 {
			return fmt.Errorf("%d of 3 nodes alive", alive)
		}
		return nil
	})
	// Every node's dispatch must know all three (ready, taking devices)
	// before devices come.
	poll.Until(t, 30*time.Second, func() error {
		for _, n := range nodes {
			seen := map[string]bool{}
			for i := 0; i < 60; i++ {
				resp, err := http.Get(fmt.Sprintf("http://%s/v1/dispatch?app=probe&device=probe-%d", n.addr("ws"), i))
				if err != nil {
					return err
				}
				var a struct{ Node string }
				_ = json.NewDecoder(resp.Body).Decode(&a)
				resp.Body.Close()
				seen[a.Node] = true
			}
			if len(seen) != 3 {
				return fmt.Errorf("dispatch on %s knows %d nodes", n.id, len(seen))
			}
		}
		return nil
	})
	return nodes, tok
}

// TestChaos_NodeKilledDuringPushes is T2 at the scale of this machine:
// devices spread over three nodes by dispatch, a business server pushing
// through whichever node answers (retrying with the same idempotency key
// when one does not), and one node killed with SIGKILL in the middle.
// Every device must end with every message exactly once, in order.
func TestChaos_NodeKilledDuringPushes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("kills a pushd process in the middle of a push run")
	}
	nodeKilledDuringPushes(t, plainRedis(t))
}

// TestChaos_NodeKilledDuringPushesOverRedisTLS is the same with Redis as
// a region runs it: TLS only, clients with a certificate of the region
// CA, and pushd's ACL user (systemd/redis-pushd.acl) with its password
// from a file.
func TestChaos_NodeKilledDuringPushesOverRedisTLS(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("kills a pushd process in the middle of a push run")
	}
	nodeKilledDuringPushes(t, secureRedis(t))
}

func nodeKilledDuringPushes(t *testing.T, rr regionRedis) {
	const devices, messages = 150, 40
	nodes, adminTok, _ := startRegionWith(t, rr)

	code, raw := admin(t, nodes[0], http.MethodPost, "/v1/admin/apps", adminTok, map[string]any{"id": "chaos"})
	if code != http.StatusOK {
		t.Fatalf("create app: HTTP %d %s", code, raw)
	}
	var app struct {
		KeyID        string `json:"key_id"`
		SecretBase64 string `json:"secret_base64"`
		APIKey       string `json:"api_key"`
	}
	_ = json.Unmarshal(raw, &app)
	secret, _ := base64.StdEncoding.DecodeString(app.SecretBase64)

	alive := func() []*node {
		var out []*node
		for _, n := range nodes {
			if !n.down.Load() {
				out = append(out, n)
			}
		}
		return out
	}
	// Devices ask the nodes' dispatch endpoints, any that answers, where
	// to connect, as the SDK does with a list of nodes.
	var bases []string
	for _, n := range nodes {
		bases = append(bases, "http://"+n.addr("ws"))
	}
	dispatch := func(device string) func(context.Context, string) (string, error) {
		return client.DispatchFrom(bases, "chaos", device, false)
	}

	type inbox struct {
		mu  sync.Mutex
		got []string
	}
	boxes := make([]*inbox, devices)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := range boxes {
		box := &inbox{}
		boxes[i] = box
		id := fmt.Sprint("dev-", i)
		tok, err := token.Issue(token.Claims{App: "chaos", Device: id, KeyID: app.KeyID, Expires: time.Now().Add(time.Hour).Unix()}, secret)
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(client.Config{
			Dispatch: dispatch(id), App: "chaos", Device: id, Token: tok,
			BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second,
			OnMessage: func(m client.Message) { box.mu.Lock(); box.got = append(box.got, string(m.Payload)); box.mu.Unlock() },
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Run(ctx) }()
	}

	targets := make([]string, devices)
	for i := range targets {
		targets[i] = fmt.Sprint("dev-", i)
	}
	push := func(k int) error {
		body, _ := json.Marshal(map[string]any{"app": "chaos", "devices": targets, "data": fmt.Sprint("m-", k),
			"idempotency_key": fmt.Sprint("chaos-", k)})
		hc := &http.Client{Timeout: 5 * time.Second}
		var last error
		for attempt := 0; attempt < 50; attempt++ {
			live := alive()
			n := live[(k+attempt)%len(live)]
			req, _ := http.NewRequest(http.MethodPost, "http://"+n.addr("push")+"/v1/push", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+app.APIKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
			last = err
			time.Sleep(100 * time.Millisecond)
		}
		return last
	}

	perNode := map[string]int{}
	poll.Until(t, 30*time.Second, func() error {
		code, raw := admin(t, nodes[0], http.MethodGet, "/v1/admin/status", adminTok, nil)
		var s struct {
			Nodes []struct {
				ID          string
				Connections int
			}
		}
		_ = json.Unmarshal(raw, &s)
		total := 0
		for _, n := range s.Nodes {
			total += n.Connections
			perNode[n.ID] = n.Connections
		}
		if code != http.StatusOK || total != devices {
			return fmt.Errorf("%d of %d devices connected", total, devices)
		}
		return nil
	})
	victim := nodes[1]
	if perNode[victim.id] == 0 {
		t.Fatalf("no device on %s to lose: %v", victim.id, perNode)
	}
	t.Logf("devices per node before the kill: %v", perNode)
	start := time.Now()
	for k := 0; k < messages; k++ {
		if k == messages/3 {
			victim.kill()
			t.Logf("killed %s with SIGKILL after %d messages", victim.id, k)
		}
		if err := push(k); err != nil {
			t.Fatalf("push %d: %v", k, err)
		}
		time.Sleep(10 * time.Millisecond) // a business server's pace: the kill lands mid-stream
	}
	t.Logf("%d pushes to %d devices accepted in %s", messages, devices, time.Since(start).Round(time.Millisecond))

	want := make([]string, messages)
	for k := range want {
		want[k] = fmt.Sprint("m-", k)
	}
	deadline := time.Now().Add(30 * time.Second)
	for i, box := range boxes {
		for {
			box.mu.Lock()
			got := append([]string(nil), box.got...)
			box.mu.Unlock()
			if len(got) > messages {
				t.Fatalf("dev-%d got %d messages for %d sent (duplicates): %v", i, len(got), messages, got)
			}
			if len(got) == messages {
				if strings.Join(got, ",") != strings.Join(want, ",") {
					t.Fatalf("dev-%d got the messages out of order: %v", i, got)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("dev-%d got %d of %d messages: %v", i, len(got), messages, got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("all %d devices got all %d messages once, in order, %s after the first push", devices, messages, time.Since(start).Round(time.Millisecond))
}
