package raftmeta_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/raftmeta/raftmetatest"
)

// TestSync_FollowerSeesEveryAcknowledgedWrite: right after the leader
// acknowledges a write, a follower may not have applied it yet; after
// Sync it has, every time.
func TestSync_FollowerSeesEveryAcknowledgedWrite(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	ctx := ctxT(t, 60*time.Second)
	li, _ := c.WaitForLeader(t)
	follower := c.Store((li + 1) % 3)
	lagged := 0
	for i := range 40 {
		id := fmt.Sprintf("app%d", i)
		// Through whichever node leads (c.Apply): a loaded machine may
		// move leadership; the point is a write acknowledged before Sync.
		if _, err := c.Apply(ctx, raftmeta.CreateApp(newApp(id))); err != nil {
			t.Fatal(err)
		}
		if _, ok := follower.State().App(id); !ok {
			lagged++
		}
		if err := follower.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := follower.State().App(id); !ok {
			t.Fatalf("write %d acknowledged before Sync is missing after it", i)
		}
		if _, leader := c.Leader(); leader != nil {
			if err := leader.Sync(ctx); err != nil {
				t.Fatalf("sync on the leader: %v", err)
			}
		}
	}
	t.Logf("the follower had not yet applied %d of 40 acknowledged writes when asked", lagged)
}

// TestSync_RestartedNodeCatchesUpBeforeItReturns: a restarted follower's
// state is empty until the leader tells it what is committed; Sync
// returns only once it holds everything written while it was down.
func TestSync_RestartedNodeCatchesUpBeforeItReturns(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	ctx := ctxT(t, 60*time.Second)
	li, _ := c.WaitForLeader(t)
	fi := (li + 1) % 3
	c.Kill(fi)
	for i := range 100 {
		if _, err := c.Apply(ctx, raftmeta.CreateApp(newApp(fmt.Sprintf("app%d", i)))); err != nil {
			t.Fatal(err)
		}
	}
	restarted := c.Restart(t, fi)
	if err := restarted.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(restarted.State().Apps); n != 100 {
		t.Fatalf("after Sync the restarted node has %d of 100 apps", n)
	}
}

// TestSync_ManyCallersShareRounds: concurrent callers all return, each
// with what was acknowledged before it called.
func TestSync_ManyCallersShareRounds(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	ctx := ctxT(t, 60*time.Second)
	li, _ := c.WaitForLeader(t)
	follower := c.Store((li + 1) % 3)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 20 {
		id := fmt.Sprintf("app%d", i)
		if _, err := c.Apply(ctx, raftmeta.CreateApp(newApp(id))); err != nil {
			t.Fatal(err)
		}
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := follower.Sync(ctx); err != nil {
					errs <- err
					return
				}
				if _, ok := follower.State().App(id); !ok {
					errs <- fmt.Errorf("%s missing after Sync", id)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestSync_WithoutALeaderEndsWithTheContext: with its peers gone a node
// has no leader; Sync gives up when the caller's context ends.
func TestSync_WithoutALeaderEndsWithTheContext(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 3)
	li, _ := c.WaitForLeader(t)
	fi := (li + 1) % 3
	for i := range 3 {
		if i != fi {
			c.Kill(i)
		}
	}
	follower := c.Store(fi)
	raftmetatest.WaitFor(t, 30*time.Second, func() error {
		if id, _ := follower.Leader(); id != "" {
			return fmt.Errorf("still follows %s", id)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := follower.Sync(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync without a leader: %v", err)
	}
}

// TestSync_RaftPortRefusesGarbage: a connection to the raft port that is
// neither raft nor a read index is closed, and raft keeps working.
func TestSync_RaftPortRefusesGarbage(t *testing.T) {
	t.Parallel()
	c := raftmetatest.NewCluster(t, 1)
	_, leader := c.WaitForLeader(t)
	conn, err := net.Dial("tcp", leader.RaftAddr())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	if _, err := conn.Read(buf); err == nil {
		t.Fatal("the raft port answered garbage")
	}
	conn.Close()
	ctx := ctxT(t, 10*time.Second)
	if _, err := leader.Apply(ctx, raftmeta.CreateApp(newApp("after-garbage"))); err != nil {
		t.Fatal(err)
	}
	if err := leader.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}
