// Package poll waits for conditions in tests, instead of sleeping for a
// guess: every package's tests use Until.
package poll

import (
	"testing"
	"time"
)

// interval is how often Until checks: short enough to add little to a
// test, long enough not to spin.
const interval = 10 * time.Millisecond

// Until calls cond until it returns nil, and fails the test with cond's
// last error when that has not happened within timeout.
func Until(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}
