package appliance

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWS_NoConnectionCutByTheHTTPDeadline opens many WebSocket sessions
// quickly and holds them silent for longer than the HTTP read deadline
// (HandshakeTimeout): none may be closed. nbio arms that deadline after
// the connection can already be upgraded; the session clears it again.
func TestWS_NoConnectionCutByTheHTTPDeadline(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.HeartbeatInterval = time.Minute
	n := startNode(t, cfg, Deps{})
	var dropped atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 600; i++ {
		c := openRaw(t, n.wsURL(), fmt.Sprint("d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Read(3 * cfg.HandshakeTimeout)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				dropped.Add(1)
			}
		}()
	}
	wg.Wait()
	if k := dropped.Load(); k != 0 {
		t.Fatalf("%d of 600 silent sessions were closed", k)
	}
}
