package streams

import (
	"os"
	"testing"

	"github.com/pushd/pushd/internal/testmain"
)

// TestMain runs at least four tests at a time: each owns its redis-server and mostly waits on it
// (-parallel overrides).
func TestMain(m *testing.M) { os.Exit(testmain.Run(m, 4)) }
