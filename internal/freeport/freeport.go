// Package freeport hands tests loopback ports that nobody else will take
// before the process they are meant for binds them.
//
// A port found by listening on ":0" and closing the listener is in the
// kernel's ephemeral range (32768–60999 here): any outgoing connection, or
// the next ":0" probe in this or another test binary, can be given the same
// port before the server under test binds it, and a node whose Raft address
// must survive a restart leaves its port unbound while it is down. Ports
// handed out here come from below that range, where the kernel never picks
// on its own, in a block of consecutive ports this process owns: the block's
// first port is held open for the life of the process, so concurrent test
// binaries (go test runs packages in parallel) claim different blocks, and a
// port is never handed out twice by one process. This is the scheme of
// HashiCorp Consul's sdk/freeport.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

const (
	lowPort   = 10000
	highPort  = 32768 // the first port of Linux's default ephemeral range
	blockSize = 250
	numBlocks = (highPort - lowPort) / blockSize
)

var (
	mu sync.Mutex
	// locks are the listeners on the first port of each block this process
	// claimed; they are never closed, as holding them keeps other processes
	// out.
	locks []net.Listener
	// next is the next candidate port in the newest block; end is past its
	// last.
	next, end int
)

// Take returns k distinct loopback ports, free when checked, that no other
// call in this process and no other process using this package will be
// given. It fails only when no further block can be claimed.
func Take(k int) ([]int, error) {
	mu.Lock()
	defer mu.Unlock()
	ports := make([]int, 0, k)
	for len(ports) < k {
		if next >= end {
			if err := claimBlock(); err != nil {
				return nil, err
			}
		}
		p := next
		next++
		// Something outside the tests may listen there (a local service).
		if l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p))); err == nil {
			_ = l.Close()
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// claimBlock holds the first port of a free block (one this process holds
// already fails to bind like any other taken block), trying blocks from a
// random one on so that processes rarely try the same one first.
func claimBlock() error {
	first := rand.IntN(numBlocks)
	for i := 0; i < numBlocks; i++ {
		start := lowPort + ((first+i)%numBlocks)*blockSize
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(start)))
		if err != nil {
			continue
		}
		locks = append(locks, l)
		next, end = start+1, start+blockSize
		return nil
	}
	return fmt.Errorf("freeport: no free block of %d ports between %d and %d", blockSize, lowPort, highPort)
}
