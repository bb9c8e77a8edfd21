package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestTake_DistinctBindablePortsBelowTheEphemeralRange(t *testing.T) {
	seen := map[int]bool{}
	// More than one block's worth, so a second block is claimed.
	for i := 0; i < 2*blockSize/10; i++ {
		ports, err := Take(10)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ports {
			if p < lowPort || p >= highPort {
				t.Fatalf("port %d outside [%d, %d)", p, lowPort, highPort)
			}
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				t.Fatalf("port %d handed out but not bindable: %v", p, err)
			}
			_ = l.Close()
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(locks) < 2 {
		t.Fatalf("%d blocks claimed for %d ports, want 2 or more", len(locks), len(seen))
	}
}

func TestClaimBlock_SkipsBlocksHeldElsewhere(t *testing.T) {
	mu.Lock()
	defer mu.Unlock()
	// A block whose lock port is held (as another test binary would) must
	// not be claimed: claim every block there is and check none repeats.
	held := map[int]bool{}
	for _, l := range locks {
		held[l.Addr().(*net.TCPAddr).Port] = true
	}
	for i := 0; i < 3; i++ {
		if err := claimBlock(); err != nil {
			t.Fatal(err)
		}
		p := locks[len(locks)-1].Addr().(*net.TCPAddr).Port
		if held[p] {
			t.Fatalf("block at %d claimed twice", p)
		}
		held[p] = true
	}
}
