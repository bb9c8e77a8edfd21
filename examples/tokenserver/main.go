// Command tokenserver is the smallest business server a web page needs
// to use pushd: it mints device tokens with appliance/token for the pages
// it serves, so that the app's secret never leaves the server
// (docs/protocol.md §12).
//
//	PUSHD_APP=dev PUSHD_KEY_ID=k1 PUSHD_SECRET_BASE64=... go run ./examples/tokenserver
//
// takes the app's credentials (pushd --dev prints them) and answers
//
//	GET /push-token?device=ID  →  {"app","device","token","expires"}
//
// A page asks it before each connect, with the JavaScript SDK:
//
//	new Client({ url, app, device,
//	  tokenFunc: async () => (await (await fetch(`/push-token?device=${device}`)).json()).token })
//
// A real server mints a token only for a device of the user signed in to
// the request: authenticate first, then call mint.
package main

import (
	"encoding/base64"
	"encoding/json"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/pushd/pushd/appliance/token"
)

// minter issues device tokens of one app.
type minter struct {
	app, keyID string
	secret     []byte // secret_base64, decoded: the HMAC key is the raw bytes
	ttl        time.Duration
	now        func() time.Time
}

// mint returns a token for device and when it expires.
func (m *minter) mint(device string) (string, int64, error) {
	exp := m.now().Add(m.ttl).Unix()
	tok, err := token.Issue(token.Claims{App: m.app, Device: device, Expires: exp, KeyID: m.keyID}, m.secret)
	return tok, exp, err
}

// ServeHTTP answers GET /push-token?device=ID.
func (m *minter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Here a real server checks the session cookie and that device
	// belongs to the signed-in user.
	device := r.URL.Query().Get("device")
	if !token.ValidID(device) {
		http.Error(w, "device must be 1-128 letters, digits or ._:-", http.StatusBadRequest)
		return
	}
	tok, exp, err := m.mint(device)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"app": m.app, "device": device, "token": tok, "expires": exp})
}

func main() {
	secret, err := base64.StdEncoding.DecodeString(os.Getenv("PUSHD_SECRET_BASE64"))
	if err != nil || len(secret) < token.MinSecretLen {
		log.Fatalf("PUSHD_SECRET_BASE64 must be the app's secret_base64 (%d bytes decoded): %v", token.MinSecretLen, err)
	}
	m := &minter{app: os.Getenv("PUSHD_APP"), keyID: os.Getenv("PUSHD_KEY_ID"), secret: secret, ttl: time.Hour, now: time.Now}
	if !token.ValidID(m.app) || !token.ValidID(m.keyID) {
		log.Fatal("PUSHD_APP and PUSHD_KEY_ID must be set")
	}
	addr := os.Getenv("ADDR")
	if addr == "" {
		addr = "127.0.0.1:8000"
	}
	http.Handle("GET /push-token", m)
	log.Printf("minting tokens of app %s on http://%s/push-token?device=ID", m.app, addr)
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
