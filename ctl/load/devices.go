package load

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/url"
	"strconv"
	"time"

	"github.com/pushd/pushd/appliance/token"
)

// Target is the server a run's devices connect to, and who they are
// there.
type Target struct {
	// URL is the device endpoint: ws://host:port/v1/ws, wss://…,
	// tcp://host:port or tls://…. Required where devices connect.
	URL string `json:"url"`
	// App is the app the devices belong to. Required.
	App string `json:"app"`
	// KeyID and Secret mint each device's token. Required where devices
	// connect.
	KeyID  string `json:"key_id"`
	Secret []byte `json:"secret"`
	// DevicePrefix starts every device id: device n is DevicePrefix
	// followed by n in decimal. "" means "bench-<8 random hex digits>-",
	// fresh per run, so devices of an earlier run neither kick these nor
	// leave messages in their inboxes.
	DevicePrefix string `json:"device_prefix"`
	// CA is PEM certificates the devices trust for wss:// and tls://
	// besides the system's (a region's own CA); nil: the system's only.
	// Insecure skips the verification (tests only).
	CA       []byte `json:"ca,omitempty"`
	Insecure bool   `json:"insecure,omitempty"`
}

// TLSConfig trusts the system's roots and the PEM certificates caPEM.
func TLSConfig(caPEM []byte) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no PEM certificate in it")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// tlsConfig is what the devices trust: nil for the system's roots.
func (t *Target) tlsConfig() (*tls.Config, error) {
	if len(t.CA) == 0 && !t.Insecure {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(t.CA) > 0 {
		c, err := TLSConfig(t.CA)
		if err != nil {
			return nil, err
		}
		tc = c
	}
	tc.InsecureSkipVerify = t.Insecure
	return tc, nil
}

// forRun checks t and gives it its device prefix. connects says whether
// devices connect, and so need a URL and token credentials.
func (t Target) forRun(connects bool) (Target, error) {
	if t.App == "" {
		return t, planErrorf("no app")
	}
	if connects {
		if _, err := t.tlsConfig(); err != nil {
			return t, planErrorf("the devices' CA: %v", err)
		}
		u, err := url.Parse(t.URL)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss" && u.Scheme != "tcp" && u.Scheme != "tls") || u.Host == "" {
			return t, planErrorf("device URL %q: want ws://host:port/v1/ws or tcp://host:port", t.URL)
		}
		if _, err := t.mint("bench-check"); err != nil {
			return t, planErrorf("cannot mint device tokens: %v", err)
		}
	}
	if t.DevicePrefix == "" {
		t.DevicePrefix = "bench-" + runID() + "-"
	}
	return t, nil
}

// device is the id of device n.
func (t *Target) device(n int) string { return t.DevicePrefix + strconv.Itoa(n) }

// mint returns a fresh token for device.
func (t *Target) mint(device string) (string, error) {
	return token.Issue(token.Claims{App: t.App, Device: device, KeyID: t.KeyID,
		Expires: time.Now().Add(time.Hour).Unix()}, t.Secret)
}

// transport is the URL's scheme: ws, wss, tcp or tls.
func (t *Target) transport() string {
	u, err := url.Parse(t.URL)
	if err != nil {
		return ""
	}
	return u.Scheme
}

// runID names one run, so its device ids are its own.
func runID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Event names of the device scenarios, connect and push.
const (
	evConnected = "connected" // answers "start": every device has connected or failed
	evDone      = "done"      // answers "stop": what was held to the end
)

// connected is a device worker's answer to "start".
type connected struct {
	OK     int     `json:"ok"`
	Failed int     `json:"failed"`
	Errors Reasons `json:"errors,omitempty"` // connect failures by reason
	// HeartbeatMS is the interval the WELCOMEs gave; the largest over
	// workers.
	HeartbeatMS int64 `json:"heartbeat_ms,omitempty"`
}

func (c *connected) merge(o *connected) {
	c.OK += o.OK
	c.Failed += o.Failed
	c.Errors.Merge(o.Errors)
	c.HeartbeatMS = max(c.HeartbeatMS, o.HeartbeatMS)
}

// held is a device worker's answer to "stop", counted before it closes
// anything.
type held struct {
	Alive           int     `json:"alive,omitempty"`
	Drops           int     `json:"drops,omitempty"`
	Errors          Reasons `json:"errors,omitempty"` // drops and disconnects by reason
	HeartbeatMisses int     `json:"heartbeat_misses,omitempty"`
	Reconnects      int     `json:"reconnects,omitempty"`
	Gaps            int     `json:"gaps,omitempty"`
}

func (h *held) merge(o *held) {
	h.Alive += o.Alive
	h.Drops += o.Drops
	h.Errors.Merge(o.Errors)
	h.HeartbeatMisses += o.HeartbeatMisses
	h.Reconnects += o.Reconnects
	h.Gaps += o.Gaps
}
