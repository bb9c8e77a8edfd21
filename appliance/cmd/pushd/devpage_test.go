package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/client/js"
	"github.com/pushd/pushd/appliance/token"
)

type devKeys struct{ secret []byte }

func (k devKeys) TokenSecret(app, kid string) ([]byte, bool) {
	if app != "dev" {
		return nil, false
	}
	if kid != "k1" {
		return nil, true
	}
	return k.secret, true
}

// TestDevPage_ServesThePageTheSDKAndTokens: the page, the SDK it imports
// (the embedded appliance/client/js/pushd.js), and device tokens of the
// dev app that verify, for loopback requests only.
func TestDevPage_ServesThePageTheSDKAndTokens(t *testing.T) {
	secret := make([]byte, 32)
	secret[0] = 7
	d := &devRegion{creds: devCredentials{App: "dev", KeyID: "k1", SecretBase64: base64.StdEncoding.EncodeToString(secret)}}
	h := d.pageHandler(slog.New(slog.NewTextHandler(io.Discard, nil)))
	get := func(target, remote, host string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		r.RemoteAddr, r.Host = remote, host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := get("/?device=tab-2", "127.0.0.1:5000", "127.0.0.1:8080"); w.Code != http.StatusFound || w.Header().Get("Location") != "/dev/?device=tab-2" {
		t.Fatalf("/: HTTP %d to %q", w.Code, w.Header().Get("Location"))
	}
	if w := get("/dev/", "127.0.0.1:5000", "127.0.0.1:8080"); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `from "./pushd.js"`) {
		t.Fatalf("/dev/: HTTP %d", w.Code)
	}
	if w := get("/dev/pushd.js", "127.0.0.1:5000", "127.0.0.1:8080"); w.Code != http.StatusOK || w.Body.String() != string(js.Module) ||
		!strings.HasPrefix(w.Header().Get("Content-Type"), "text/javascript") {
		t.Fatalf("/dev/pushd.js: HTTP %d %s", w.Code, w.Header().Get("Content-Type"))
	}
	for _, host := range []string{"localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST"} {
		w := get("/dev/token?device=browser-1", "[::1]:5000", host)
		var a struct {
			App, Device, Token string
			Expires            int64
		}
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &a) != nil {
			t.Fatalf("token with Host %s: HTTP %d %s", host, w.Code, w.Body)
		}
		c, err := token.Verify(a.Token, devKeys{secret}, "dev", "browser-1", time.Now())
		if err != nil || a.App != "dev" || c.Expires != a.Expires || time.Until(time.Unix(a.Expires, 0)) > devTokenTTL {
			t.Fatalf("token %+v: claims %+v, %v", a, c, err)
		}
	}
	for _, tc := range []struct{ remote, host string }{
		{"10.0.0.5:5000", "127.0.0.1:8080"},     // another machine
		{"127.0.0.1:5000", "evil.example:8080"}, // a rebound name
		{"127.0.0.1:5000", "10.0.0.1:8080"},
	} {
		if w := get("/dev/token?device=browser-1", tc.remote, tc.host); w.Code != http.StatusForbidden || w.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("token from %s for Host %s: HTTP %d, want 403", tc.remote, tc.host, w.Code)
		}
	}
	if w := get("/dev/token?device=bad%20id", "127.0.0.1:5000", "localhost"); w.Code != http.StatusBadRequest {
		t.Fatalf("bad device id: HTTP %d", w.Code)
	}
}
