package adminapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/internal/poll"
)

// roundTrip GETs path and checks the answer is exactly T's JSON: it
// decodes strictly into T (no field T lacks, none miscased) and T encodes
// back to the same JSON (no field T drops). It returns the decoded T.
func roundTrip[T any](t *testing.T, cl *api.Client, path string) T {
	t.Helper()
	var raw json.RawMessage
	if err := cl.Do(context.Background(), http.MethodGet, path, nil, nil, &raw); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	var typed T
	if err := api.DecodeStrict(raw, &typed); err != nil {
		t.Fatalf("GET %s: the answer is not a %T: %v\n%s", path, typed, err, raw)
	}
	back, err := json.Marshal(typed)
	if err != nil {
		t.Fatal(err)
	}
	var want, got any
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(back, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("GET %s: %T does not round-trip the answer:\nserved  %s\nre-encoded %s", path, typed, raw, back)
	}
	return typed
}

// TestAdminAPI_AnswersInTheAPITypes: every endpoint of the admin API
// answers the JSON of its type in appliance/api, which pushctl and the
// tests decode. Each GET round-trips through its type exactly; each write
// answers through its api.Client method with the fields its type names.
// The region has something in every field first: a degrade, tunables, a
// limited app, a connected device with stored messages.
func TestAdminAPI_AnswersInTheAPITypes(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	ctx := context.Background()
	n := r.Nodes[follower(t, r)]
	admin := adminClient(t, n, r.Admin)

	// Writes, each through its method.
	if _, err := admin.SetDegrade(ctx, &api.DegradeRequest{Priority: "normal", Businesses: []string{"ads"}, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if a, err := admin.SetTunables(ctx, &api.Tunables{InboxMaxLen: 100, AckTimeout: "2s"}); err != nil || a.Index == 0 {
		t.Fatalf("set tunables: %+v, %v", a, err)
	}
	// A write that generates a credential and meets an election after it
	// was committed answers 409 (see shownOnce); it was applied all the
	// same.
	app, err := admin.CreateApp(ctx, "shop", api.AppLimits{MaxPayload: 2048, Businesses: []string{"chat"}})
	if !shownOnce(t, err) && (err != nil || app.ID != "shop" || app.KeyID != "k1" || app.SecretBase64 == "" || app.APIKeyID != "key-1" || app.APIKey == "") {
		t.Fatalf("create app: %+v, %v", app, err)
	}
	if s, err := admin.RotateSecret(ctx, "shop"); !shownOnce(t, err) && (err != nil || s.KeyID != "k2" || s.SecretBase64 == "") {
		t.Fatalf("rotate secret: %+v, %v", s, err)
	}
	if k, err := admin.AddAPIKey(ctx, "shop"); !shownOnce(t, err) && (err != nil || k.APIKeyID != "key-2" || k.APIKey == "") {
		t.Fatalf("add API key: %+v, %v", k, err)
	}
	if a, err := admin.RevokeAPIKey(ctx, "shop", "key-1"); err != nil || a.Index == 0 {
		t.Fatalf("revoke API key: %+v, %v", a, err)
	}
	if a, err := admin.SetAppLimits(ctx, "shop", api.AppLimits{RatePerSec: 10, Burst: 20}); err != nil || a.Index == 0 {
		t.Fatalf("set limits: %+v, %v", a, err)
	}
	if a, err := admin.SetAppClientGroups(ctx, "shop", false); err != nil || a.Index == 0 {
		t.Fatalf("set client groups: %+v, %v", a, err)
	}
	if tok, err := admin.CreateAdminToken(ctx, "ops", "operator"); !shownOnce(t, err) && (err != nil || tok.ID != "ops" || tok.Role != "operator" || tok.Token == "") {
		t.Fatalf("create admin token: %+v, %v", tok, err)
	}
	for _, draining := range []bool{true, false} {
		if a, err := admin.DrainNode(ctx, r.Nodes[2].ID(), draining); err != nil || a.Index == 0 {
			t.Fatalf("drain %v: %+v, %v", draining, a, err)
		}
	}
	if a, err := admin.SetNodeWeight(ctx, r.Nodes[2].ID(), 100); err != nil || a.Index == 0 {
		t.Fatalf("weight: %+v, %v", a, err)
	}
	// A device with messages and a route, for the device read.
	runDevice(t, n.DeviceURL(), "phone")
	mustPush(t, n, []string{"phone"}, "hello")

	viewer := adminClient(t, n, r.Viewer)
	r.Raft.WaitConverged(t)
	// A loaded machine can hold an election just then: ask until the
	// status shows a leader and every node.
	var st api.RegionStatus
	poll.Until(t, 10*time.Second, func() error {
		st = roundTrip[api.RegionStatus](t, viewer, "/v1/admin/status")
		alive := 0
		for _, ns := range st.Nodes {
			if ns.Alive && ns.RaftState != "" && ns.AppliedIndex > 0 && ns.Redis == "up" && ns.AdminAddr != "" {
				alive++
			}
		}
		if st.Leader == "" || len(st.Nodes) != 3 || alive != 3 || !st.Degrade.Active || st.Redis != "up" {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	if typed, err := viewer.Status(ctx); err != nil || typed.Leader != st.Leader || len(typed.Nodes) != 3 {
		t.Fatalf("Status: %+v, %v", typed, err)
	}
	local := roundTrip[api.LocalStatus](t, viewer, "/v1/admin/local")
	if local.ID != n.ID() || local.Leader == "" || local.Term == 0 || local.CommitIndex == 0 || local.Connections != 1 {
		t.Fatalf("local %+v", local)
	}
	apps := roundTrip[struct {
		Apps []api.App `json:"apps"`
	}](t, viewer, "/v1/admin/apps").Apps
	i := slices.IndexFunc(apps, func(a api.App) bool { return a.ID == "shop" })
	if len(apps) != 2 || i < 0 || !slices.Equal(slices.Sorted(slices.Values(apps[i].KeyIDs)), []string{"k1", "k2"}) || !slices.Equal(apps[i].APIKeys, []string{"key-2"}) ||
		apps[i].RatePerSec != 10 || apps[i].Burst != 20 || apps[i].ClientGroups || apps[i].Created.IsZero() || !apps[1-i].ClientGroups {
		t.Fatalf("apps %+v", apps)
	}
	if typed, err := viewer.Apps(ctx); err != nil || !reflect.DeepEqual(typed, apps) {
		t.Fatalf("Apps: %+v, %v", typed, err)
	}
	deg := roundTrip[api.DegradeState](t, viewer, "/v1/admin/degrade")
	if !deg.Active || deg.Priority != "normal" || !slices.Equal(deg.Businesses, []string{"ads"}) || deg.Reason != "test" || deg.By != "root" || deg.Since.IsZero() {
		t.Fatalf("degrade %+v", deg)
	}
	if typed, err := viewer.Degrade(ctx); err != nil || !reflect.DeepEqual(*typed, deg) {
		t.Fatalf("Degrade: %+v, %v", typed, err)
	}
	tun := roundTrip[api.Tunables](t, viewer, "/v1/admin/tunables")
	if tun.InboxMaxLen != 100 || tun.AckTimeout != "2s" || tun.InboxTTL == "" || tun.InFlightWindow == 0 || tun.QueueFrames == 0 || tun.QueueBytes == 0 {
		t.Fatalf("tunables %+v", tun)
	}
	if typed, err := viewer.Tunables(ctx); err != nil || *typed != tun {
		t.Fatalf("Tunables: %+v, %v", typed, err)
	}
	tokens := roundTrip[struct {
		Tokens []api.AdminToken `json:"tokens"`
	}](t, admin, "/v1/admin/tokens").Tokens
	var ids []string
	for _, tk := range tokens {
		if tk.Created.IsZero() || tk.Role == "" {
			t.Fatalf("tokens %+v", tokens)
		}
		ids = append(ids, tk.ID)
	}
	if !slices.Equal(ids, []string{"ops", "root", "watcher"}) {
		t.Fatalf("tokens %v, want ops, root and watcher", ids)
	}
	if typed, err := admin.AdminTokens(ctx); err != nil || !reflect.DeepEqual(typed, tokens) {
		t.Fatalf("AdminTokens: %+v, %v", typed, err)
	}
	audit := roundTrip[struct {
		Entries []api.AuditEntry `json:"entries"`
	}](t, viewer, "/v1/admin/audit").Entries
	byRoot := 0
	for _, e := range audit {
		if e.Actor == "root" {
			byRoot++
			if e.Index == 0 || e.Time.IsZero() || e.Op == "" || e.RequestID == "" {
				t.Fatalf("audit entry %+v", e)
			}
		}
	}
	if byRoot != 12 {
		t.Fatalf("%d audit entries by root, want the 12 writes above: %+v", byRoot, audit)
	}
	if typed, err := viewer.Audit(ctx); err != nil || !reflect.DeepEqual(typed, audit) {
		t.Fatalf("Audit: %+v, %v", typed, err)
	}
	dev := roundTrip[api.DeviceState](t, viewer, "/v1/admin/devices/"+testApp+"/phone")
	if dev.App != testApp || dev.Device != "phone" || !dev.Online || dev.Route == nil || dev.Route.Node != n.ID() || dev.Epoch == "" || dev.Last != 1 {
		t.Fatalf("device %+v", dev)
	}

	// The writes left: revoke a token, delete an app, degrade off, and a
	// member's join and removal.
	if a, err := admin.RevokeAdminToken(ctx, "ops"); err != nil || a.Index == 0 {
		t.Fatalf("revoke admin token: %+v, %v", a, err)
	}
	if a, err := admin.DeleteApp(ctx, "shop"); err != nil || a.Index == 0 {
		t.Fatalf("delete app: %+v, %v", a, err)
	}
	if a, err := admin.DegradeOff(ctx, "over"); err != nil || a.Index == 0 {
		t.Fatalf("degrade off: %+v, %v", a, err)
	}
	spare := r.Raft.Member(r.Raft.Open(t))
	m, err := admin.JoinNode(ctx, &api.JoinRequest{ID: spare.ID, RaftAddr: spare.RaftAddr, AdminAddr: spare.AdminAddr, PushAddr: spare.PushAddr, Weight: api.Ptr(7)})
	if err != nil || m.ID != spare.ID || m.RaftAddr != spare.RaftAddr || m.AdminAddr != spare.AdminAddr || m.PushAddr != spare.PushAddr || m.Weight != 7 || m.Joined.IsZero() {
		t.Fatalf("join: %+v, %v", m, err)
	}
	if rm, err := admin.RemoveNode(ctx, spare.ID); err != nil || rm.Removed != spare.ID {
		t.Fatalf("remove: %+v, %v", rm, err)
	}
}

// TestAdminAPI_HealthzAndProfiles: the admin listener answers /healthz
// without a token, as the device port does (api.Health), and serves
// profiles to admin tokens only.
func TestAdminAPI_HealthzAndProfiles(t *testing.T) {
	t.Parallel()
	r := appliancetest.StartRegion(t, 1, appliancetest.RegionOptions{})
	n := r.Nodes[0]
	var h api.Health
	if err := adminClient(t, n, "").Do(context.Background(), http.MethodGet, "/healthz", nil, nil, &h); err != nil || h.Status != "ok" {
		t.Fatalf("healthz on the admin listener: %+v, %v", h, err)
	}
	var raw json.RawMessage
	if err := adminClient(t, n, "").Do(context.Background(), http.MethodGet, "/healthz", nil, nil, &raw); err != nil {
		t.Fatal(err)
	}
	if err := api.DecodeStrict(raw, &api.Health{}); err != nil {
		t.Fatalf("healthz answer %s: %v", raw, err)
	}

	for _, c := range []struct {
		tok  string
		want int
	}{{"", http.StatusUnauthorized}, {r.Viewer, http.StatusForbidden}} {
		if err := adminClient(t, n, c.tok).Do(context.Background(), http.MethodGet, "/debug/pprof/", nil, nil, nil); status(err) != c.want {
			t.Errorf("profiles with %q: %v, want HTTP %d", c.tok, err, c.want)
		}
	}
	req, err := http.NewRequest(http.MethodGet, n.AdminURL+"/debug/pprof/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.Admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Fatalf("profiles with the admin token: HTTP %d %.100s", resp.StatusCode, body)
	}
}

// TestAdminAPI_UnknownPathIsJSON404: a path the admin API does not serve
// is answered 404 not_found in the API's error shape, with or without a
// token; so is a method an endpoint does not take (not the mux's plain
// text 405).
func TestAdminAPI_UnknownPathIsJSON404(t *testing.T) {
	t.Parallel()
	r := appliancetest.StartRegion(t, 1, appliancetest.RegionOptions{})
	n := r.Nodes[0]
	for _, c := range []struct{ method, path, tok string }{
		{http.MethodGet, "/v1/admin/no-such-thing", r.Admin},
		{http.MethodGet, "/v1/admin/no-such-thing", ""},
		{http.MethodPost, "/v2/admin/apps", r.Admin},
		{http.MethodGet, "/", ""},
		{http.MethodDelete, "/v1/admin/status", r.Admin},
		{http.MethodGet, "/v1/admin/degrade/off", r.Admin},
	} {
		err := adminClient(t, n, c.tok).Do(context.Background(), c.method, c.path, nil, nil, nil)
		if ae := apiError(err); ae == nil || ae.Status != http.StatusNotFound || ae.Code != "not_found" {
			t.Errorf("%s %s: %v, want 404 not_found in JSON", c.method, c.path, err)
		}
	}
}
