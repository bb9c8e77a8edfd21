package appliance

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestConnections_AreNotInheritedByChildProcesses: nbio duplicates every
// accepted socket with dup(2), which drops close-on-exec. A child started
// while devices are connected (pushd --dev restarting its redis-server)
// then held every connection open: the socket outlived its close here,
// and epoll, which follows the open socket rather than its number, went
// on reporting its hang-up under a number this process had since given
// to a new connection, which nbio then closed.
func TestConnections_AreNotInheritedByChildProcesses(t *testing.T) {
	n := startNode(t, testConfig(), Deps{})
	openRaw(t, n.wsURL(), "ws-device")
	openRaw(t, n.tcpURL(), "tcp-device")

	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = child.Process.Kill()
		_ = child.Wait()
	})
	// Start returns once the child has called exec, so its descriptors
	// are the ones it keeps.
	dir := filepath.Join("/proc", strconv.Itoa(child.Process.Pid), "fd")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("no %s to inspect: %v", dir, err)
	}
	var sockets []string
	for _, e := range entries {
		if link, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(link, "socket:") {
			sockets = append(sockets, e.Name()+" -> "+link)
		}
	}
	if len(sockets) > 0 {
		t.Fatalf("a child process inherited %d sockets: %v", len(sockets), sockets)
	}
}
