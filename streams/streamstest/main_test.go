package streamstest_test

import (
	"os"
	"testing"

	"github.com/pushd/pushd/internal/testmain"
)

// TestMain runs at least four tests at a time: each owns its Redis servers and mostly waits on them
// (-parallel overrides).
func TestMain(m *testing.M) { os.Exit(testmain.Run(m, 4)) }
