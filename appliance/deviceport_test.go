package appliance

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDevicePort_FreshRequestsNeverEOF sends fresh requests, each on a new
// connection that asks to be closed after its answer, to /healthz and
// /v1/dispatch from four goroutines for a few seconds: every one must be
// answered. nbio v1.6.12 closed ~1 in 2,500 of them before answering
// (the client saw EOF): the hang-up of a connection just closed on a
// handler goroutine was reported under its descriptor number after that
// number had gone to a new connection (third_party/nbio/PUSHD.md).
func TestDevicePort_FreshRequestsNeverEOF(t *testing.T) {
	n := startNode(t, testConfig(), Deps{})
	base := "http://" + n.Addrs().WS
	paths := []string{"/healthz", "/v1/dispatch?app=" + testApp + "&device=d1"}
	deadline := time.Now().Add(5 * time.Second)
	var sent, failed atomic.Int64
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				err := getOK(base + paths[i%len(paths)])
				sent.Add(1)
				if err == nil {
					continue
				}
				failed.Add(1)
				mu.Lock()
				if len(errs) < 5 {
					errs = append(errs, err.Error())
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d fresh requests to the device port failed: %v", f, sent.Load(), errs)
	}
	t.Logf("%d fresh requests answered", sent.Load())
}

// getOK GETs url on a new connection and reads the whole answer, which
// must be 200.
func getOK(url string) error {
	resp, err := plainHTTP.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("GET %s: body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}
