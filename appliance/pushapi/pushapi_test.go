package pushapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lesismal/nbio/logging"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/appliance/pushapi"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
	"github.com/pushd/pushd/streams"
	"github.com/pushd/pushd/streams/streamstest"
)

func init() { logging.SetLevel(logging.LevelNone) }

const (
	testApp     = "app1"
	testAPIKey  = "test-api-key-0123456789"
	otherAPIKey = "app2-api-key-0123456789"
	// maxBody is the push API's bound on a request body
	// (docs/push-api.md).
	maxBody = 256 << 10
)

var testSecret = bytes.Repeat([]byte("s"), 32)

// testConfig is appliancetest's configuration with the test app, whose
// devices sign tokens with testSecret under key id k1.
func testConfig() appliance.Config {
	cfg := appliancetest.TestConfig()
	cfg.Apps = []appliance.AppConfig{{ID: testApp, Secrets: map[string][]byte{"k1": testSecret}, APIKeys: []string{testAPIKey}}}
	return cfg
}

// startNode starts a node with its push API, storing through a real
// redis-server when durable, with mut applied to testConfig.
func startNode(t testing.TB, durable bool, mut ...func(*appliance.Config)) *appliancetest.Node {
	t.Helper()
	cfg := testConfig()
	for _, m := range mut {
		m(&cfg)
	}
	opts := appliancetest.Options{Config: cfg}
	if durable {
		opts.Store = streams.New(streamstest.StartRedis(t).Client(t), streams.Config{})
	}
	return appliancetest.Start(t, opts)
}

// pushClient is an api.Client for the node's push API with key.
func pushClient(t testing.TB, n *appliancetest.Node, key string) *api.Client {
	t.Helper()
	cl, err := api.NewClient(n.PushURL, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// issue returns a token for device of the test app.
func issue(t testing.TB, device string) string {
	t.Helper()
	tok, err := token.Issue(token.Claims{App: testApp, Device: device, KeyID: "k1", Expires: time.Now().Add(time.Hour).Unix()}, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// apiAnswer is one raw push API answer.
type apiAnswer struct {
	status     int
	code       string
	retryAfter string
	body       string
}

// answerOf reads a raw answer: its status, error code and Retry-After.
func answerOf(status int, h http.Header, body []byte) apiAnswer {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return apiAnswer{status: status, code: e.Error.Code, retryAfter: h.Get("Retry-After"), body: string(body)}
}

// postPush sends body to the node's push API with the test app's key;
// hdr overrides headers (an empty value removes one).
func postPush(t *testing.T, n *appliancetest.Node, method, body string, hdr map[string]string) apiAnswer {
	t.Helper()
	req, _ := http.NewRequest(method, n.PushURL+"/v1/push", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw bytes.Buffer
	_, _ = raw.ReadFrom(resp.Body)
	return answerOf(resp.StatusCode, resp.Header, raw.Bytes())
}

// TestPushAPI_RejectsBadRequests: every kind of bad request gets its HTTP
// status and stable code, stores nothing and leaves the node healthy.
func TestPushAPI_RejectsBadRequests(t *testing.T) {
	t.Parallel()
	n := startNode(t, true, func(c *appliance.Config) {
		c.MaxTargets = 10
		c.MaxTTL = time.Hour
		c.Apps = append(c.Apps, appliance.AppConfig{ID: "app2", Secrets: map[string][]byte{"k1": testSecret},
			APIKeys: []string{otherAPIKey}, Businesses: []string{"chat"}, MaxPayload: 8 << 10})
	})
	big := strings.Repeat("x", appliance.DefaultMaxPayload+1)
	app2 := map[string]string{"Authorization": "Bearer " + otherAPIKey}
	cases := []struct {
		name, method, body string
		hdr                map[string]string
		status             int
		code               string
	}{
		{"not json", "POST", `{`, nil, 400, "bad_json"},
		{"empty body", "POST", ``, nil, 400, "bad_json"},
		{"an array", "POST", `[]`, nil, 400, "bad_json"},
		{"unknown field", "POST", `{"app":"app1","devices":["d"],"data":"x","urgent":true}`, nil, 400, "bad_json"},
		{"trailing", "POST", `{"app":"app1","devices":["d"],"data":"x"} {}`, nil, 400, "bad_json"},
		{"devices a string", "POST", `{"app":"app1","devices":"d","data":"x"}`, nil, 400, "bad_json"},
		{"ttl a string", "POST", `{"app":"app1","devices":["d"],"data":"x","ttl":"1"}`, nil, 400, "bad_json"},
		{"ttl a fraction", "POST", `{"app":"app1","devices":["d"],"data":"x","ttl":1.5}`, nil, 400, "bad_json"},
		{"data a number", "POST", `{"app":"app1","devices":["d"],"data":5}`, nil, 400, "bad_json"},
		{"body over 256 KiB", "POST", `{"app":"app1","devices":["d"],"data":"` + strings.Repeat("x", 300<<10) + `"}`, nil, 413, "payload_too_large"},
		{"GET", "GET", ``, nil, 405, "method_not_allowed"},
		{"no key", "POST", `{"app":"app1","devices":["d"],"data":"x"}`, map[string]string{"Authorization": ""}, 401, "unauthorized"},
		{"not bearer", "POST", `{"app":"app1","devices":["d"],"data":"x"}`, map[string]string{"Authorization": "Basic " + testAPIKey}, 401, "unauthorized"},
		{"wrong key", "POST", `{"app":"app1","devices":["d"],"data":"x"}`, map[string]string{"Authorization": "Bearer nope-nope-nope-nope"}, 401, "unauthorized"},
		{"another app's key", "POST", `{"app":"app1","devices":["d"],"data":"x"}`, app2, 401, "unauthorized"},
		{"unknown app", "POST", `{"app":"app9","devices":["d"],"data":"x"}`, nil, 401, "unauthorized"},
		{"no app", "POST", `{"devices":["d"],"data":"x"}`, nil, 400, "missing_field"},
		{"content type", "POST", `{}`, map[string]string{"Content-Type": "text/plain"}, 415, "unsupported_media_type"},
		{"no content type", "POST", `{}`, map[string]string{"Content-Type": ""}, 415, "unsupported_media_type"},
		{"no data", "POST", `{"app":"app1","devices":["d"]}`, nil, 400, "missing_field"},
		{"both data", "POST", `{"app":"app1","devices":["d"],"data":"x","data_base64":"eA=="}`, nil, 400, "invalid_field"},
		{"bad base64", "POST", `{"app":"app1","devices":["d"],"data_base64":"!!"}`, nil, 400, "invalid_field"},
		{"no target", "POST", `{"app":"app1","data":"x"}`, nil, 400, "missing_field"},
		{"empty devices", "POST", `{"app":"app1","devices":[],"data":"x"}`, nil, 400, "invalid_field"},
		{"two targets", "POST", `{"app":"app1","devices":["d"],"broadcast":true,"data":"x"}`, nil, 400, "missing_field"},
		{"bad group", "POST", `{"app":"app1","group":"a b","data":"x"}`, nil, 400, "invalid_field"},
		{"too many", "POST", `{"app":"app1","devices":["1","2","3","4","5","6","7","8","9","10","11"],"data":"x"}`, nil, 400, "too_many_targets"},
		{"bad priority", "POST", `{"app":"app1","devices":["d"],"data":"x","priority":"urgent"}`, nil, 400, "invalid_field"},
		{"negative ttl", "POST", `{"app":"app1","devices":["d"],"data":"x","ttl":-1}`, nil, 400, "invalid_field"},
		{"zero ttl", "POST", `{"app":"app1","devices":["d"],"data":"x","ttl":0}`, nil, 400, "invalid_field"},
		{"ttl over the maximum", "POST", `{"app":"app1","devices":["d"],"data":"x","ttl":3601}`, nil, 400, "invalid_field"},
		{"ttl that overflows", "POST", `{"app":"app1","devices":["d"],"data":"x","ttl":10000000000}`, nil, 400, "invalid_field"},
		{"bad business", "POST", `{"app":"app1","devices":["d"],"data":"x","business":"a/b"}`, nil, 400, "invalid_field"},
		{"business not enabled", "POST", `{"app":"app2","devices":["d"],"data":"x","business":"ads"}`, app2, 400, "invalid_field"},
		{"bad idempotency key", "POST", `{"app":"app1","devices":["d"],"data":"x","idempotency_key":"a b"}`, nil, 400, "invalid_field"},
		{"payload", "POST", `{"app":"app1","devices":["d"],"data":"` + big + `"}`, nil, 413, "payload_too_large"},
		{"payload over the app's own limit", "POST", `{"app":"app2","devices":["d"],"data":"` + strings.Repeat("x", 8<<10+1) + `"}`, app2, 413, "payload_too_large"},

		// Duplicate keys: the last one used to win, so a key check could
		// be passed with one value and the push made with another.
		{"app twice", "POST", `{"app":"app9","app":"app1","devices":["d"],"data":"x"}`, nil, 400, "bad_json"},
		{"app twice, the same value", "POST", `{"app":"app1","app":"app1","devices":["d"],"data":"x"}`, nil, 400, "bad_json"},
		{"app twice, one escaped", "POST", `{"app":"app9","\u0061pp":"app1","devices":["d"],"data":"x"}`, nil, 400, "bad_json"},
		{"app twice, one miscased", "POST", `{"app":"app9","App":"app1","devices":["d"],"data":"x"}`, nil, 400, "bad_json"},
		{"a miscased field", "POST", `{"APP":"app1","devices":["d"],"data":"x"}`, nil, 400, "bad_json"},
		{"priority twice", "POST", `{"app":"app1","devices":["d"],"data":"x","priority":"low","priority":"high"}`, nil, 400, "bad_json"},
		{"a duplicate key in a nested object", "POST", `{"app":"app1","devices":[{"a":1,"a":2}],"data":"x"}`, nil, 400, "bad_json"},
		{"not UTF-8", "POST", "{\"app\":\"app1\",\"devices\":[\"d\"],\"data\":\"\xff\"}", nil, 400, "bad_json"},
		{"nested too deeply", "POST", `{"app":"app1","devices":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `,"data":"x"}`, nil, 400, "bad_json"},

		// "" is refused, never read as the default.
		{"empty app", "POST", `{"app":"","devices":["d"],"data":"x"}`, nil, 400, "invalid_field"},
		{"empty priority", "POST", `{"app":"app1","devices":["d"],"data":"x","priority":""}`, nil, 400, "invalid_field"},
		{"empty business", "POST", `{"app":"app1","devices":["d"],"data":"x","business":""}`, nil, 400, "invalid_field"},
		{"empty idempotency key", "POST", `{"app":"app1","devices":["d"],"data":"x","idempotency_key":""}`, nil, 400, "invalid_field"},
		{"empty group", "POST", `{"app":"app1","group":"","data":"x"}`, nil, 400, "invalid_field"},
		{"empty group beside devices", "POST", `{"app":"app1","devices":["d"],"group":"","data":"x"}`, nil, 400, "invalid_field"},
		{"only an empty device id", "POST", `{"app":"app1","devices":[""],"data":"x"}`, nil, 400, "invalid_field"},
		{"no valid device id", "POST", `{"app":"app1","devices":["a b","","x/y"],"data":"x"}`, nil, 400, "invalid_field"},
		{"a device listed twice", "POST", `{"app":"app1","devices":["d","e","d"],"data":"x"}`, nil, 400, "invalid_field"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if a := postPush(t, n, c.method, c.body, c.hdr); a.status != c.status || a.code != c.code {
				t.Fatalf("HTTP %d %q, want %d %s: %s", a.status, a.code, c.status, c.code, a.body)
			}
		})
	}
	for _, app := range []string{testApp, "app2"} {
		for _, d := range []string{"d", "1"} {
			if st, err := n.DeviceState(t.Context(), app, d); err != nil || st.Last != 0 {
				t.Fatalf("a refused push stored something for %s/%s: %+v %v", app, d, st, err)
			}
		}
	}
	if !n.RedisUp() {
		t.Fatal("bad requests marked Redis down")
	}

	// What the bad requests were checked against is accepted.
	for _, c := range []struct {
		name, body string
		hdr        map[string]string
	}{
		{"ttl at the maximum", `{"app":"app1","devices":["d"],"data":"x","ttl":3600}`, nil},
		{"an enabled business", `{"app":"app2","devices":["d"],"data":"x","business":"chat"}`, app2},
		{"payload within the app's own limit", `{"app":"app2","devices":["d"],"data":"` + big + `"}`, app2},
		// null is the field left out; an empty payload is a message.
		{"nulls for absent fields", `{"app":"app1","devices":["d"],"data":"x","priority":null,"business":null,"group":null,"ttl":null,"data_base64":null,"idempotency_key":null}`, nil},
		{"an empty payload", `{"app":"app1","devices":["d"],"data":""}`, nil},
		{"an empty base64 payload", `{"app":"app1","devices":["d"],"data_base64":""}`, nil},
	} {
		if a := postPush(t, n, "POST", c.body, c.hdr); a.status != http.StatusOK {
			t.Errorf("%s: HTTP %d %s", c.name, a.status, a.body)
		}
	}

	// A bad device id among good ones is rejected alone.
	resp, err := pushClient(t, n, testAPIKey).Push(t.Context(), &api.PushRequest{App: api.Ptr(testApp),
		Devices: []string{"ok", "not ok", ""}, Data: api.Ptr("x")})
	if err != nil || !resp.Stored || len(resp.Results) != 3 || resp.Results[0].Status != api.StatusStored ||
		resp.Results[1].Status != api.StatusRejected || resp.Results[1].Reason != "invalid_device" ||
		resp.Results[2].Status != api.StatusRejected || resp.Results[2].Reason != "invalid_device" {
		t.Fatalf("mixed devices: %+v, %v", resp, err)
	}
}

// TestPushAPI_RateLimit: an app over its rate gets 429 with a Retry-After
// it can keep; a request that could never fit the burst is a 400, not a
// 429 to wait for; other apps are not limited.
func TestPushAPI_RateLimit(t *testing.T) {
	t.Parallel()
	n := startNode(t, true, func(c *appliance.Config) {
		c.Apps[0].RatePerSec, c.Apps[0].Burst = 2, 4
		c.Apps = append(c.Apps, appliance.AppConfig{ID: "app2", Secrets: map[string][]byte{"k1": testSecret}, APIKeys: []string{otherAPIKey}})
	})
	one := `{"app":"app1","devices":["d"],"data":"x"}`
	if a := postPush(t, n, "POST", `{"app":"app1","devices":["a","b","c","d","e"],"data":"x"}`, nil); a.status != 400 || a.code != "too_many_targets" {
		t.Fatalf("5 devices against a burst of 4: HTTP %d %s", a.status, a.body)
	}
	var limited apiAnswer
	for i := 0; i < 6 && limited.status == 0; i++ {
		if a := postPush(t, n, "POST", one, nil); a.status == http.StatusTooManyRequests {
			limited = a
		} else if a.status != http.StatusOK {
			t.Fatalf("push %d: HTTP %d %s", i, a.status, a.body)
		}
	}
	if limited.code != "rate_limited" {
		t.Fatalf("the burst of 4 never ran out: %+v", limited)
	}
	wait, err := strconv.Atoi(limited.retryAfter)
	if err != nil || wait != 1 {
		t.Fatalf("Retry-After %q, want 1 s (one token at 2/s)", limited.retryAfter)
	}
	if a := postPush(t, n, "POST", `{"app":"app2","devices":["d"],"data":"x"}`, map[string]string{"Authorization": "Bearer " + otherAPIKey}); a.status != http.StatusOK {
		t.Fatalf("another app was limited too: HTTP %d %s", a.status, a.body)
	}
	poll.Until(t, 2*time.Duration(wait)*time.Second, func() error {
		if a := postPush(t, n, "POST", one, nil); a.status != http.StatusOK {
			return fmt.Errorf("still limited after Retry-After: HTTP %d %s", a.status, a.code)
		}
		return nil
	})
}

// shedder is a node whose degrade policy the test switches on: the
// region's policy reaches a node through Raft, and only the handler's
// order of checks is under test here.
type shedder struct {
	*appliancetest.Node
	shed atomic.Bool
}

func (s *shedder) Sheds(p wire.Priority, business string) (string, bool) {
	if s.shed.Load() {
		return "the region sheds every priority right now: drill", true
	}
	return s.Node.Sheds(p, business)
}

// TestPushAPI_ChecksRunInOrder: a request that fails two checks gets the
// earlier one's answer, in the order docs/push-api.md gives: method,
// content type, body size, JSON, authentication, fields, targets,
// degrade, rate limit, store.
func TestPushAPI_ChecksRunInOrder(t *testing.T) {
	t.Parallel()
	// No store: a stored push answers 503 unavailable.
	node := startNode(t, false, func(c *appliance.Config) {
		c.MaxTargets = 2
		c.Apps[0].RatePerSec, c.Apps[0].Burst = 0.001, 1 // one push, then none for a long while
	})
	core := &shedder{Node: node}
	h := pushapi.New(core, pushapi.Options{})
	push := func(method, contentType, auth, body string) apiAnswer {
		t.Helper()
		req := httptest.NewRequest(method, "/v1/push", strings.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return answerOf(w.Code, w.Header(), w.Body.Bytes())
	}
	const (
		ctJSON = "application/json"
		valid  = `{"app":"app1","devices":["d"],"data":"x"}`
	)
	huge := strings.Repeat("{", maxBody+1) // over the size limit and not JSON
	step := func(name, method, contentType, auth, body string, status int, code string) {
		t.Helper()
		if a := push(method, contentType, auth, body); a.status != status || a.code != code {
			t.Errorf("%s: HTTP %d %s, want %d %s: %s", name, a.status, a.code, status, code, a.body)
		}
	}
	step("method, then content type", "GET", "text/plain", testAPIKey, valid, 405, "method_not_allowed")
	step("content type, then body size", "POST", "text/plain", testAPIKey, huge, 415, "unsupported_media_type")
	step("body size, then JSON", "POST", ctJSON, testAPIKey, huge, 413, "payload_too_large")
	step("JSON, then authentication", "POST", ctJSON, "", `{"app":"app1","app":"app1","devices":["d"],"data":"x"}`, 400, "bad_json")
	step("unknown field, then authentication", "POST", ctJSON, "", `{"app":"app1","devices":["d"],"data":"x","urgent":true}`, 400, "bad_json")
	step("authentication, then fields", "POST", ctJSON, "wrong-key-0123456789", `{"app":"app1","devices":["d"],"data":"x","priority":""}`, 401, "unauthorized")
	step("the app, then fields", "POST", ctJSON, testAPIKey, `{"devices":["d"],"data":"x","priority":""}`, 400, "missing_field")
	step("fields, then targets", "POST", ctJSON, testAPIKey, `{"app":"app1","data":"x","priority":""}`, 400, "invalid_field")
	step("payload size, then targets", "POST", ctJSON, testAPIKey, `{"app":"app1","devices":["a","b","c"],"data":"`+strings.Repeat("x", appliance.DefaultMaxPayload+1)+`"}`, 413, "payload_too_large")
	// The store: no Redis and the device not connected here. This push
	// takes the app's one token.
	step("the store", "POST", ctJSON, testAPIKey, valid, 503, "unavailable")
	step("rate limit, then store", "POST", ctJSON, testAPIKey, valid, 429, "rate_limited")
	core.shed.Store(true)
	step("degrade, then rate limit", "POST", ctJSON, testAPIKey, valid, 503, "degraded")
	step("targets, then degrade", "POST", ctJSON, testAPIKey, `{"app":"app1","devices":["a","a"],"data":"x"}`, 400, "invalid_field")
	step("too many targets, then degrade", "POST", ctJSON, testAPIKey, `{"app":"app1","devices":["a","b","c"],"data":"x"}`, 400, "too_many_targets")
}
