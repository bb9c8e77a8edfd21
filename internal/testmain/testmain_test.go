package testmain

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
)

// parallelOnCommandLine is whether go test was given -parallel, which
// Run leaves as it is.
var parallelOnCommandLine bool

func TestMain(m *testing.M) {
	for _, arg := range os.Args[1:] {
		parallelOnCommandLine = parallelOnCommandLine || strings.HasPrefix(arg, "-test.parallel")
	}
	os.Exit(Run(m, 3))
}

// started counts the subtests of TestRun_ParallelTestsRunAsManyAtOnceAsAsked
// that have begun.
var started atomic.Int32

// TestRun_ParallelTestsRunAsManyAtOnceAsAsked starts three parallel
// tests that each wait until all three have begun: a waiting test holds
// its place, so with go test's default of GOMAXPROCS at a time the third
// would never begin on a 2-core machine.
func TestRun_ParallelTestsRunAsManyAtOnceAsAsked(t *testing.T) {
	if parallelOnCommandLine {
		t.Skip("-parallel is set on the command line")
	}
	for _, name := range []string{"a", "b", "c"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			started.Add(1)
			poll.Until(t, 10*time.Second, func() error {
				if n := started.Load(); n < 3 {
					return fmt.Errorf("only %d of 3 tests began", n)
				}
				return nil
			})
		})
	}
}
