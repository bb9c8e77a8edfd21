package appliance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/appliance/wire"
)

// upstream forwards device UP frames to each business's webhook. Every
// business has its own bounded queue and workers, so one slow business
// never delays another's messages; a full queue is answered at once with
// CodeUnavailable rather than buffered without bound.
type upstream struct {
	client *http.Client
	queues map[string]chan upJob // business → queue; fixed after start
}

type upJob struct {
	s        *session
	app      string
	device   string
	business string
	req      *wire.Up
}

// upRequest is the JSON body POSTed to a business webhook.
type upRequest struct {
	App      string `json:"app"`
	Device   string `json:"device"`
	Business string `json:"business"`
	Request  uint64 `json:"request"`
	Payload  []byte `json:"payload"` // base64 in JSON
}

const (
	upWorkers  = 4
	upQueueLen = 1024
)

func newUpstream(hooks map[string]string, timeout time.Duration) *upstream {
	u := &upstream{client: &http.Client{Timeout: timeout}, queues: map[string]chan upJob{}}
	for b := range hooks {
		u.queues[b] = make(chan upJob, upQueueLen)
	}
	return u
}

// start launches each business's workers as goroutines owned by n.
func (u *upstream) start(n *Node, hooks map[string]string) {
	for b, url := range hooks {
		q := u.queues[b]
		for i := 0; i < upWorkers; i++ {
			n.goOwned(func() {
				for {
					select {
					case <-n.stop:
						return
					case j := <-q:
						u.forward(n, url, j)
					}
				}
			})
		}
	}
}

func (u *upstream) forward(n *Node, url string, j upJob) {
	body, _ := json.Marshal(upRequest{App: j.app, Device: j.device, Business: j.business, Request: j.req.Request, Payload: j.req.Payload})
	ctx, cancel := context.WithTimeout(n.ctx, u.client.Timeout)
	defer cancel()
	reply := &wire.UpReply{Request: j.req.Request, Code: wire.CodeUpstreamFailed}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err == nil {
		req.Header.Set("Content-Type", "application/json")
		var resp *http.Response
		if resp, err = u.client.Do(req); err == nil {
			limit := int64(n.cfg.MaxFrame)
			payload, rerr := io.ReadAll(io.LimitReader(resp.Body, limit+1))
			_ = resp.Body.Close()
			switch {
			case rerr != nil:
				err = rerr
			case int64(len(payload)) > limit:
				err = fmt.Errorf("webhook answer over %d bytes", limit)
			case resp.StatusCode/100 != 2:
				err = fmt.Errorf("webhook answered %s", resp.Status)
			default:
				reply.Code, reply.Payload = wire.CodeOK, payload
			}
		}
	}
	if err != nil {
		n.metrics.upstreamFailures.WithLabelValues(j.business).Inc()
		n.log.Warn("upstream forward failed", "business", j.business, "device", j.device, "err", err)
	}
	j.s.sendIfOpen(wire.Append(nil, reply))
}

// onUp forwards an upstream message to its business.
func (s *session) onUp(f *wire.Up) {
	n := s.node
	s.mu.Lock()
	open, app, device := s.state == stateOpen, s.app, s.device
	s.mu.Unlock()
	if !open {
		s.protocolError("UP before HELLO")
		return
	}
	reply := func(code wire.Code, msg string) {
		s.send(wire.Append(nil, &wire.UpReply{Request: f.Request, Code: code, Payload: []byte(msg)}))
	}
	if _, ok := n.apps.Load().businessAllowed(app, []string{f.Business}); !ok || !token.ValidID(f.Business) {
		reply(wire.CodeUnknownBusiness, "business not enabled for this app")
		return
	}
	q, ok := n.upstream.queues[f.Business]
	if !ok {
		reply(wire.CodeUnknownBusiness, "no upstream webhook for business "+f.Business)
		return
	}
	select {
	case q <- upJob{s: s, app: app, device: device, business: f.Business, req: f}:
	default:
		reply(wire.CodeUnavailable, "upstream queue full")
	}
}

// sendIfOpen queues frame unless the session has closed meanwhile.
func (s *session) sendIfOpen(frame []byte) {
	if s.isOpen() {
		s.send(frame)
	}
}
