package main

import (
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/pushd/pushd/appliance/client/js"
	"github.com/pushd/pushd/appliance/token"
)

// The dev page: with --dev only, the device port (default
// http://127.0.0.1:8080) also serves a page that connects as a device of
// the dev app with the JavaScript SDK and shows what arrives, so that
// `pushctl push --device browser-1 --data hello` lands in a browser.
//
//	GET /                 redirects to /dev/
//	GET /dev/             the page (?device=ID; default browser-1)
//	GET /dev/pushd.js     the SDK, appliance/client/js/pushd.js
//	GET /dev/token?device=ID
//	                      {"app","device","token","expires"}: a device
//	                      token of the dev app, valid for an hour
//
// The token endpoint is what a business server does for its pages
// (docs/protocol.md §12), done by the node because a dev region has no
// business server. It exists only with --dev, whose listeners bind
// loopback unless told otherwise, and it answers only requests that come
// from a loopback address and name a loopback host (localhost, 127.x,
// [::1]) in Host: another machine cannot reach it, and another web site
// open in the developer's browser can neither read its answer (no CORS
// header) nor rebind a name of its own to 127.0.0.1 to get one. What it
// hands out is no more than the dev credentials pushd --dev prints.

//go:embed devpage/index.html
var devPageHTML []byte

// devTokenTTL is how long a dev page's token is valid.
const devTokenTTL = time.Hour

// pageHandler serves the dev page on the device port (Config.DeviceHandler).
func (d *devRegion) pageHandler(log *slog.Logger) http.Handler {
	log = log.With("component", "dev-page")
	secret, err := base64.StdEncoding.DecodeString(d.creds.SecretBase64)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		to := "/dev/"
		if r.URL.RawQuery != "" {
			to += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, to, http.StatusFound)
	})
	mux.HandleFunc("GET /dev/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(devPageHTML)
	})
	mux.HandleFunc("GET /dev/pushd.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(js.Module)
	})
	mux.HandleFunc("GET /dev/token", func(w http.ResponseWriter, r *http.Request) {
		if !loopbackRequest(r) {
			http.Error(w, "the dev token endpoint answers loopback requests only", http.StatusForbidden)
			return
		}
		device := r.URL.Query().Get("device")
		if !token.ValidID(device) {
			http.Error(w, "device must be 1-128 letters, digits or ._:-", http.StatusBadRequest)
			return
		}
		if err != nil {
			http.Error(w, "dev credentials: "+err.Error(), http.StatusInternalServerError)
			return
		}
		exp := time.Now().Add(devTokenTTL).Unix()
		tok, ierr := token.Issue(token.Claims{App: d.creds.App, Device: device, Expires: exp, KeyID: d.creds.KeyID}, secret)
		if ierr != nil {
			log.Error("mint a dev token", "err", ierr)
			http.Error(w, ierr.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]any{"app": d.creds.App, "device": device, "token": tok, "expires": exp})
	})
	return mux
}

// loopbackRequest reports whether r came from a loopback address and
// names a loopback host.
func loopbackRequest(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return false
	}
	name := r.Host
	if h, _, err := net.SplitHostPort(name); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
	if strings.EqualFold(name, "localhost") {
		return true
	}
	ip := net.ParseIP(name)
	return ip != nil && ip.IsLoopback()
}
