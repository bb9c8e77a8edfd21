package pushapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/appliance/pushapi"
	"github.com/pushd/pushd/streams"
)

// reachCounter is a node that counts the pushes that reach delivery.
type reachCounter struct {
	*appliancetest.Node
	reached atomic.Int64
}

func (c *reachCounter) PushDevices(ctx context.Context, app string, msg streams.Message, devices []string) (*api.PushResponse, error) {
	c.reached.Add(1)
	return c.Node.PushDevices(ctx, app, msg, devices)
}

func (c *reachCounter) PushGroup(ctx context.Context, app, group string, msg streams.Message, f *appliance.Filter) *api.PushResponse {
	c.reached.Add(1)
	return c.Node.PushGroup(ctx, app, group, msg, f)
}

func (c *reachCounter) PushUsers(ctx context.Context, app string, msg streams.Message, users []string, devices [][]string) (*api.PushResponse, error) {
	c.reached.Add(1)
	return c.Node.PushUsers(ctx, app, msg, users, devices)
}

// FuzzPushRequest sends arbitrary bodies to the push API's handler over a
// real node without a store (nothing leaves the process, so each input
// takes microseconds): every answer is a JSON answer with a status, never
// a panic; a refusal carries an error code; and nothing but a well-formed
// request of the test app reaches delivery.
func FuzzPushRequest(f *testing.F) {
	f.Add([]byte(`{"app":"app1","devices":["d"],"data":"x"}`))
	f.Add([]byte(`{"app":"app1","group":"room","data_base64":"eA==","priority":"high","ttl":5}`))
	f.Add([]byte(`{"app":"app1","broadcast":true,"data":"x","idempotency_key":"k-1"}`))
	f.Add([]byte(`{"app":"app1","devices":[],"data":null}`))
	f.Add([]byte(`[1,2,3]`))
	f.Add([]byte(`{"app":"noapp","app":"app1","devices":["d"],"data":"x"}`))
	f.Add([]byte(`{"app":"app1","devices":["d"],"data":"x","priority":""}`))
	core := &reachCounter{Node: appliancetest.Start(f, appliancetest.Options{Config: testConfig()})}
	h := pushapi.New(core, pushapi.Options{})
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/v1/push", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		w := httptest.NewRecorder()
		before := core.reached.Load()
		h.ServeHTTP(w, req)
		if w.Code == 0 || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("answer %d with content type %q", w.Code, w.Header().Get("Content-Type"))
		}
		if w.Code == http.StatusOK {
			var resp api.PushResponse
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || resp.ID == "" {
				t.Fatalf("200 answer %q: %v", w.Body, err)
			}
		} else {
			a := answerOf(w.Code, w.Header(), w.Body.Bytes())
			if w.Code < 400 || a.code == "" {
				t.Fatalf("answer %d %q: want an error code", w.Code, w.Body)
			}
		}
		if core.reached.Load() != before {
			var req api.PushRequest
			if err := api.DecodeStrict(body, &req); err != nil || req.App == nil || *req.App != testApp {
				t.Fatalf("%q reached delivery (HTTP %d): %v", body, w.Code, err)
			}
		}
	})
}
