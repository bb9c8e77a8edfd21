package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/token"
)

type keys struct{ secret []byte }

func (k keys) TokenSecret(app, kid string) ([]byte, bool) {
	if app != "app1" {
		return nil, false
	}
	if kid != "k1" {
		return nil, true
	}
	return k.secret, true
}

// TestMinter_TokensVerify: what the example hands a page is a token pushd
// accepts for that app and device.
func TestMinter_TokensVerify(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_700_000_000, 0)
	m := &minter{app: "app1", keyID: "k1", secret: secret, ttl: time.Hour, now: func() time.Time { return now }}
	w := httptest.NewRecorder()
	m.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/push-token?device=web-1", nil))
	var a struct {
		App, Device, Token string
		Expires            int64
	}
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &a) != nil {
		t.Fatalf("HTTP %d %s", w.Code, w.Body)
	}
	c, err := token.Verify(a.Token, keys{secret}, "app1", "web-1", now)
	if err != nil || c.Expires != now.Add(time.Hour).Unix() || a.Expires != c.Expires {
		t.Fatalf("token %q: %+v, %v", a.Token, c, err)
	}
	w = httptest.NewRecorder()
	m.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/push-token?device=not%20an%20id", nil))
	if w.Code != http.StatusBadRequest {
		t.Fatalf("bad device id: HTTP %d", w.Code)
	}
}
