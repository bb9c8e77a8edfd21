package bridge

import (
	"os"
	"testing"

	"github.com/pushd/pushd/internal/testmain"
)

// TestMain runs at least four tests at a time: most wait on brokers, Redis and regions
// (-parallel overrides).
func TestMain(m *testing.M) { os.Exit(testmain.Run(m, 4)) }
