package pushapi_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/pushapi"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/raftmeta/raftmetatest"
)

// get sends a GET to url with key as its bearer (none when "").
func get(t *testing.T, url, key string) apiAnswer {
	t.Helper()
	return call(t, http.MethodGet, url, key)
}

// call sends a request without a body to url with key as its bearer
// (none when "") and checks that the answer is JSON.
func call(t *testing.T, method, url, key string) apiAnswer {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answerOf(resp.StatusCode, resp.Header, b)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, url, ct)
	}
	return a
}

// TestPushAPI_HealthAndUnknownPaths: the push listener answers /healthz
// as every listener of a node does, and any other path with a JSON 404,
// the admin API's included: it is served on a listener of its own.
func TestPushAPI_HealthAndUnknownPaths(t *testing.T) {
	t.Parallel()
	n := startNode(t, false)
	a := get(t, n.PushURL+"/healthz", "")
	var h api.Health
	if err := json.Unmarshal([]byte(a.body), &h); a.status != http.StatusOK || err != nil || h.Status != "ok" {
		t.Fatalf("/healthz: HTTP %d %s", a.status, a.body)
	}
	for _, path := range []string{"/", "/v1/pushes", "/v1/admin/status", "/v1/ws", "/metrics", "/v1/devices"} {
		if a := get(t, n.PushURL+path, testAPIKey); a.status != http.StatusNotFound || a.code != "not_found" ||
			!strings.Contains(a.body, path) {
			t.Errorf("GET %s: HTTP %d %s, want 404 not_found naming the path", path, a.status, a.body)
		}
	}
}

// TestPushAPI_AnswersWhileStarting: until the node's metadata has caught
// up, /healthz says starting and every push is a 503 to retry.
func TestPushAPI_AnswersWhileStarting(t *testing.T) {
	t.Parallel()
	// A node with region metadata is ready once Start has caught it up;
	// this one is never started.
	cluster := raftmetatest.NewCluster(t, 1)
	node, err := appliance.New(testConfig(), appliance.Deps{Meta: cluster.Store(0)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(pushapi.New(node, pushapi.Options{}))
	t.Cleanup(srv.Close)
	a := get(t, srv.URL+"/healthz", "")
	var h api.Health
	if err := json.Unmarshal([]byte(a.body), &h); a.status != http.StatusServiceUnavailable || err != nil || h.Status != "starting" {
		t.Fatalf("/healthz while starting: HTTP %d %s", a.status, a.body)
	}
	cl, err := api.NewClient(srv.URL, testAPIKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.Push(t.Context(), &api.PushRequest{App: api.Ptr(testApp), Devices: []string{"d"}, Data: api.Ptr("x")})
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Code != "unavailable" || ae.RetryAfter != time.Second {
		t.Fatalf("push while starting: %v", err)
	}
}

// connect opens a raw device connection for device and expects WELCOME.
func connect(t *testing.T, url, device string) *client.Conn {
	t.Helper()
	c, err := client.DialConn(t.Context(), url, client.DialOptions{})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Send(&wire.Hello{Token: issue(t, device), App: testApp, Device: device}); err != nil {
		t.Fatal(err)
	}
	f, err := c.Read(2 * time.Second)
	if _, ok := f.(*wire.Welcome); !ok || err != nil {
		t.Fatalf("answer to HELLO: %#v, %v", f, err)
	}
	return c
}

// readPush reads frames, BATCHes unwrapped, until a PUSH.
func readPush(t *testing.T, c *client.Conn) *wire.Push {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, err := c.Read(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for a PUSH: %v", err)
		}
		var p *wire.Push
		if b, ok := f.(*wire.Batch); ok {
			err = b.Each(wire.CeilingMaxFrame, func(f wire.Frame) error {
				if q, ok := f.(*wire.Push); ok && p == nil {
					p = q
				}
				return nil
			})
		} else {
			p, _ = f.(*wire.Push)
		}
		if err != nil {
			t.Fatal(err)
		}
		if p != nil {
			return p
		}
	}
}

// TestPushAPI_DeviceState: GET /v1/devices/{device} through api.Client
// shows a device's route and inbox as pushes and acks change them, and
// refuses what the push API refuses.
func TestPushAPI_DeviceState(t *testing.T) {
	t.Parallel()
	n := startNode(t, true)
	cl := pushClient(t, n, testAPIKey)
	ctx := t.Context()

	st, err := cl.Device(ctx, testApp, "phone-1")
	if err != nil || st.App != testApp || st.Device != "phone-1" || st.Online || st.Route != nil || st.Last != 0 || st.InboxLen != 0 {
		t.Fatalf("a device never seen: %+v, %v", st, err)
	}

	dev := connect(t, n.DeviceURL(), "phone-1")
	for _, data := range []string{"one", "two"} {
		resp, err := cl.Push(ctx, &api.PushRequest{App: api.Ptr(testApp), Devices: []string{"phone-1"}, Data: api.Ptr(data)})
		if err != nil || !resp.Results[0].Accepted() {
			t.Fatalf("push %s: %+v, %v", data, resp, err)
		}
	}
	if p := readPush(t, dev); p.Seq != 1 {
		t.Fatalf("first PUSH seq %d", p.Seq)
	}
	if err := dev.Send(&wire.Ack{Seq: 1}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, func() error {
		st, err = cl.Device(ctx, testApp, "phone-1")
		if err != nil {
			return err
		}
		if st.Acked != 1 {
			return fmt.Errorf("acked %d, want 1", st.Acked)
		}
		return nil
	})
	if !st.Online || st.Route == nil || st.Route.Node != "n1" || st.Route.Epoch == 0 || st.Epoch == "" ||
		st.Last != 2 || st.InboxLen != 1 || st.Lost != 0 {
		t.Fatalf("after two pushes and one ack: %+v", st)
	}

	var ae *api.APIError
	if _, err := pushClient(t, n, "nope-nope-nope-nope").Device(ctx, testApp, "phone-1"); !errors.As(err, &ae) || ae.Code != "unauthorized" {
		t.Errorf("wrong key: %v", err)
	}
	if _, err := cl.Device(ctx, "app9", "phone-1"); !errors.As(err, &ae) || ae.Code != "unauthorized" {
		t.Errorf("unknown app: %v", err)
	}
	if _, err := cl.Device(ctx, testApp, "a b"); !errors.As(err, &ae) || ae.Status != 400 || ae.Code != "invalid_field" {
		t.Errorf("invalid device id: %v", err)
	}
	if a := get(t, n.PushURL+"/v1/devices/phone-1", testAPIKey); a.status != 400 || a.code != "missing_field" {
		t.Errorf("no app: HTTP %d %s", a.status, a.body)
	}
	if a := call(t, http.MethodPost, n.PushURL+"/v1/devices/phone-1?app=app1", testAPIKey); a.status != 405 || a.code != "method_not_allowed" {
		t.Errorf("POST: HTTP %d %s", a.status, a.body)
	}
}

// metric returns the value of the sample named name (labels included)
// in a scrape, or "" when it is absent.
func metric(body, name string) string {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestPushAPI_MetricsOnTheNodeRegistry: the push API counts requests by
// outcome, times them, and counts degrade refusals on the node's
// registry, so the device port's /metrics serves them with the node's own.
func TestPushAPI_MetricsOnTheNodeRegistry(t *testing.T) {
	t.Parallel()
	r := appliancetest.StartRegion(t, 1, appliancetest.RegionOptions{})
	n := r.Nodes[0]
	ctx := t.Context()
	admin, err := api.NewClient(n.AdminURL, r.Admin, nil)
	if err != nil {
		t.Fatal(err)
	}
	app, err := admin.CreateApp(ctx, "shop", api.AppLimits{})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := api.NewClient(n.PushURL, app.APIKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Outcomes as the test saw them; /metrics must say the same.
	outcomes := map[string]int{}
	push := func(priority string) string {
		t.Helper()
		_, err := cl.Push(ctx, &api.PushRequest{App: api.Ptr("shop"), Devices: []string{"d"}, Data: api.Ptr("x"), Priority: api.Ptr(priority)})
		var ae *api.APIError
		switch {
		case err == nil:
			outcomes["ok"]++
			return "ok"
		case errors.As(err, &ae):
			outcomes[ae.Code]++
			return ae.Code
		}
		t.Fatal(err)
		return ""
	}
	if o := push("normal"); o != "ok" {
		t.Fatalf("push: %s", o)
	}
	if _, err := cl.Push(ctx, &api.PushRequest{App: api.Ptr("shop"), Devices: []string{"d"}}); err == nil {
		t.Fatal("a push without data was accepted")
	}
	outcomes["missing_field"]++
	if _, err := admin.SetDegrade(ctx, &api.DegradeRequest{Priority: "normal", Reason: "metrics test"}); err != nil {
		t.Fatal(err)
	}
	// The policy reaches the node through Raft a moment later.
	poll.Until(t, 5*time.Second, func() error {
		if o := push("low"); o != "degraded" {
			return fmt.Errorf("low priority push during degrade: %s", o)
		}
		return nil
	})
	if o := push("high"); o != "ok" {
		t.Fatalf("high priority push during degrade: %s", o)
	}

	resp, err := http.Get(n.HTTPURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	scrape := string(b)
	total := 0
	for outcome, k := range outcomes {
		total += k
		if got := metric(scrape, `pushd_push_requests_total{outcome="`+outcome+`"}`); got != fmt.Sprint(k) {
			t.Errorf("pushd_push_requests_total{outcome=%q} = %q, want %d", outcome, got, k)
		}
	}
	if got := metric(scrape, "pushd_push_duration_seconds_count"); got != fmt.Sprint(total) {
		t.Errorf("pushd_push_duration_seconds_count = %q, want %d", got, total)
	}
	if got := metric(scrape, "pushd_degrade_refused_total"); got != fmt.Sprint(outcomes["degraded"]) {
		t.Errorf("pushd_degrade_refused_total = %q, want %d", got, outcomes["degraded"])
	}
	// The node's own count of the two stored pushes is in the same scrape.
	if got := metric(scrape, `pushd_pushes_total{status="stored"}`); got != fmt.Sprint(outcomes["ok"]) {
		t.Errorf("pushd_pushes_total{status=\"stored\"} = %q, want %d", got, outcomes["ok"])
	}
}
