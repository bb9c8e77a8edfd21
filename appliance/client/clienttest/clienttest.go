// Package clienttest runs Go SDK devices inside tests and records what
// reaches them, for the tests of every package that needs a device.
package clienttest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/client"
	"github.com/pushd/pushd/internal/poll"
)

// Device is an SDK client running for a test. Its methods are safe for
// concurrent use.
type Device struct {
	// Client is the SDK client, for requests (Join, Up) and its cursor.
	Client *client.Client

	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned

	mu       sync.Mutex
	msgs     []client.Message
	welcomes []client.Welcome
	lastErr  error
}

// Run runs a client with cfg until the test ends and waits (5 s at most)
// until it is connected. Zero backoff bounds become 20 ms and 200 ms, so
// a reconnect does not outlast a test's patience. The device records every
// message, WELCOME and disconnect, and then calls cfg's own hooks.
func Run(t testing.TB, cfg client.Config) *Device {
	t.Helper()
	d := &Device{done: make(chan struct{})}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = 20 * time.Millisecond
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 200 * time.Millisecond
	}
	onMessage, onWelcome, onDisconnect := cfg.OnMessage, cfg.OnWelcome, cfg.OnDisconnect
	cfg.OnMessage = func(m client.Message) {
		d.mu.Lock()
		d.msgs = append(d.msgs, m)
		d.mu.Unlock()
		if onMessage != nil {
			onMessage(m)
		}
	}
	cfg.OnWelcome = func(w client.Welcome) {
		d.mu.Lock()
		d.welcomes = append(d.welcomes, w)
		d.mu.Unlock()
		if onWelcome != nil {
			onWelcome(w)
		}
	}
	cfg.OnDisconnect = func(err error) {
		d.mu.Lock()
		d.lastErr = err
		d.mu.Unlock()
		if onDisconnect != nil {
			onDisconnect(err)
		}
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.Client = c
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() {
		defer close(d.done)
		_ = c.Run(ctx)
	}()
	t.Cleanup(d.Stop)
	poll.Until(t, 5*time.Second, func() error {
		if !c.Connected() {
			d.mu.Lock()
			defer d.mu.Unlock()
			return fmt.Errorf("%s not connected (last disconnect: %v)", cfg.Device, d.lastErr)
		}
		return nil
	})
	return d
}

// Stop ends the client and waits (5 s at most) for Run to return.
func (d *Device) Stop() {
	d.cancel()
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
	}
}

// Received returns the messages handed to the app so far, in order.
func (d *Device) Received() []client.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]client.Message(nil), d.msgs...)
}

// LastWelcome returns the WELCOME of the latest session.
func (d *Device) LastWelcome() client.Welcome {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.welcomes[len(d.welcomes)-1]
}

// Welcomes returns the WELCOME of every session so far, in order.
func (d *Device) Welcomes() []client.Welcome {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]client.Welcome(nil), d.welcomes...)
}

// LastError returns why the latest connection ended; nil before any did.
func (d *Device) LastError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastErr
}

// WaitCount waits (10 s at most) until the app has n messages, and
// returns them all.
func (d *Device) WaitCount(t testing.TB, n int) []client.Message {
	t.Helper()
	poll.Until(t, 10*time.Second, func() error {
		if got := len(d.Received()); got < n {
			return fmt.Errorf("received %d of %d", got, n)
		}
		return nil
	})
	return d.Received()
}

// Payloads returns the messages' payloads as strings.
func Payloads(ms []client.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = string(m.Payload)
	}
	return out
}
