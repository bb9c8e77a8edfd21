package tests

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
	"github.com/pushd/pushd/internal/poll"
)

// appCreds is what creating an app through the admin API answers.
type appCreds struct {
	ID           string
	KeyID        string `json:"key_id"`
	SecretBase64 string `json:"secret_base64"`
	APIKey       string `json:"api_key"`
}

// createApp creates an app through n's admin API.
func createApp(t *testing.T, n *node, adminTok, id string) appCreds {
	t.Helper()
	code, raw := admin(t, n, http.MethodPost, "/v1/admin/apps", adminTok, map[string]any{"id": id})
	if code != http.StatusOK {
		t.Fatalf("create app %s: HTTP %d %s", id, code, raw)
	}
	a := appCreds{ID: id}
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// fleet is a set of SDK devices of one app, each connecting where the
// region's dispatch says (asking every node's device port in turn, as an
// app given the node list does), recording what reaches the app.
type fleet struct {
	devices []*fleetDevice
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

type fleetDevice struct {
	id string
	c  *client.Client

	mu       sync.Mutex
	got      []string    // payloads handed to the app, in order
	welcomes []time.Time // when each session opened
	// unrecovered is when a WELCOME said recovered: false, or a message
	// came after a gap: the app was told it may have missed messages.
	unrecovered []time.Time
	refusals    []wire.Code // handshake refusals, final or not
	ended       error       // why Run returned, once it did
}

// startFleet starts n devices named prefix-0 … prefix-(n-1).
func startFleet(t *testing.T, app appCreds, nodes []*node, prefix string, n int) *fleet {
	t.Helper()
	secret, err := base64.StdEncoding.DecodeString(app.SecretBase64)
	if err != nil {
		t.Fatal(err)
	}
	var bases []string
	for _, nd := range nodes {
		bases = append(bases, "http://"+nd.addr("ws"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fleet{cancel: cancel}
	t.Cleanup(f.stop)
	for i := 0; i < n; i++ {
		d := &fleetDevice{id: fmt.Sprintf("%s-%d", prefix, i)}
		tok, err := token.Issue(token.Claims{App: app.ID, Device: d.id, KeyID: app.KeyID, Expires: time.Now().Add(time.Hour).Unix()}, secret)
		if err != nil {
			t.Fatal(err)
		}
		d.c, err = client.New(client.Config{
			Dispatch: client.DispatchFrom(bases, app.ID, d.id, false), App: app.ID, Device: d.id, Token: tok,
			BackoffMin: 250 * time.Millisecond, BackoffMax: 5 * time.Second,
			OnMessage: func(m client.Message) {
				d.mu.Lock()
				d.got = append(d.got, string(m.Payload))
				d.mu.Unlock()
			},
			OnWelcome: func(w client.Welcome) {
				d.mu.Lock()
				d.welcomes = append(d.welcomes, time.Now())
				if !w.Recovered {
					d.unrecovered = append(d.unrecovered, time.Now())
				}
				d.mu.Unlock()
			},
			OnGap: func(_, _ uint64) {
				d.mu.Lock()
				d.unrecovered = append(d.unrecovered, time.Now())
				d.mu.Unlock()
			},
			OnDisconnect: func(err error) {
				var refused *client.RefusedError
				if errors.As(err, &refused) {
					d.mu.Lock()
					d.refusals = append(d.refusals, refused.Code)
					d.mu.Unlock()
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		f.devices = append(f.devices, d)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			err := d.c.Run(ctx)
			d.mu.Lock()
			d.ended = err
			d.mu.Unlock()
		}()
	}
	return f
}

func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
}

func (f *fleet) ids() []string {
	out := make([]string, len(f.devices))
	for i, d := range f.devices {
		out[i] = d.id
	}
	return out
}

// connected counts the devices with a session open now.
func (f *fleet) connected() int {
	n := 0
	for _, d := range f.devices {
		if d.c.Connected() {
			n++
		}
	}
	return n
}

func (f *fleet) waitConnected(t *testing.T, timeout time.Duration) {
	t.Helper()
	poll.Until(t, timeout, func() error {
		if n := f.connected(); n != len(f.devices) {
			return fmt.Errorf("%d of %d devices connected", n, len(f.devices))
		}
		return nil
	})
}

// check fails the test for a device that gave up (Run returned) or was
// ever refused with a code it takes as final (unknown_app and the like).
func (f *fleet) check(t *testing.T) {
	t.Helper()
	for _, d := range f.devices {
		d.mu.Lock()
		ended, refusals := d.ended, slices.Clone(d.refusals)
		d.mu.Unlock()
		if ended != nil {
			t.Errorf("%s gave up: %v", d.id, ended)
		}
		for _, code := range refusals {
			if code != wire.CodeUnavailable && code != wire.CodeDraining {
				t.Errorf("%s was refused %s", d.id, code)
			}
		}
	}
}

// pusher sends numbered pushes to a fleet through the region's live
// nodes, as a business server would: a push that fails on one node is
// sent to the next with the same idempotency key. It records, per
// device, the payloads answered stored, and every answer by HTTP status.
type pusher struct {
	t     *testing.T
	app   appCreds
	nodes []*node
	hc    *http.Client

	mu       sync.Mutex
	stored   map[string][]string // device → payloads answered stored, in order
	statuses map[int]int         // HTTP status → answers
	attempts []answer            // every attempt, in the order answered
	next     atomic.Int64
}

// answer is one attempt of a push: when it was sent and answered, and
// how (HTTP status, 0 for a transport error; stored; the Retry-After
// header).
type answer struct {
	sent, at   time.Time
	status     int
	stored     bool
	retryAfter string
}

func newPusher(t *testing.T, app appCreds, nodes []*node) *pusher {
	return &pusher{t: t, app: app, nodes: nodes, hc: &http.Client{Timeout: 5 * time.Second},
		stored: map[string][]string{}, statuses: map[int]int{}}
}

// push sends the next payload to devices and waits until some node
// stored it, or gives up after 30 s of trying.
func (p *pusher) push(devices []string) error {
	k := p.next.Add(1)
	payload := fmt.Sprint("m-", k)
	body, _ := json.Marshal(map[string]any{"app": p.app.ID, "devices": devices, "data": payload,
		"idempotency_key": fmt.Sprint("push-", k)})
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 0; ; attempt++ {
		var live []*node
		for _, n := range p.nodes {
			if !n.down.Load() {
				live = append(live, n)
			}
		}
		if len(live) == 0 {
			return errors.New("no live node")
		}
		n := live[(int(k)+attempt)%len(live)]
		req, _ := http.NewRequest(http.MethodPost, "http://"+n.addr("push")+"/v1/push", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+p.app.APIKey)
		req.Header.Set("Content-Type", "application/json")
		sent := time.Now()
		resp, err := p.hc.Do(req)
		if err != nil {
			p.mu.Lock()
			p.attempts = append(p.attempts, answer{sent: sent, at: time.Now()})
			p.mu.Unlock()
		}
		if err == nil {
			var ans struct {
				Stored  bool
				Results []struct{ Device, Status string }
			}
			decodeErr := json.NewDecoder(resp.Body).Decode(&ans)
			resp.Body.Close()
			stored := resp.StatusCode == http.StatusOK && decodeErr == nil && ans.Stored
			p.mu.Lock()
			p.statuses[resp.StatusCode]++
			p.attempts = append(p.attempts, answer{sent: sent, at: time.Now(), status: resp.StatusCode, stored: stored,
				retryAfter: resp.Header.Get("Retry-After")})
			if stored {
				for _, r := range ans.Results {
					if r.Status != "rejected" {
						p.stored[r.Device] = append(p.stored[r.Device], payload)
					}
				}
				p.mu.Unlock()
				return nil
			}
			p.mu.Unlock()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("push %d: not stored after 30 s", k)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// answers returns how many answers had each HTTP status.
func (p *pusher) answers() map[int]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[int]int, len(p.statuses))
	for k, v := range p.statuses {
		out[k] = v
	}
	return out
}

// delivered reports a device whose app has not yet seen every payload
// stored for it exactly once in order, or nil once all have.
func (p *pusher) delivered(f *fleet) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range f.devices {
		want := p.stored[d.id]
		d.mu.Lock()
		got := slices.Clone(d.got)
		d.mu.Unlock()
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
			return fmt.Errorf("%s: the app saw %s, stored were %s (a duplicate or out of order)", d.id, tail(got), tail(want))
		}
		if len(got) < len(want) {
			return fmt.Errorf("%s: %d of %d stored pushes delivered", d.id, len(got), len(want))
		}
	}
	return nil
}

// tail shortens a long list of payloads for a message.
func tail(s []string) string {
	if len(s) > 8 {
		return fmt.Sprintf("[… %s] (%d)", strings.Join(s[len(s)-8:], " "), len(s))
	}
	return fmt.Sprint(s)
}
