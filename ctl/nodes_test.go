package ctl

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/raftmeta"
)

// nodeRow returns the nodes list row of node id.
func nodeRow(t *testing.T, h harness, id string) map[string]string {
	t.Helper()
	rows := tableRows(h.run(t, "nodes", "list").expect(t, exitOK).stdout)
	for _, row := range rows[1:] {
		if row[0] == id {
			out := map[string]string{}
			for i, col := range rows[0] {
				out[col] = row[i]
			}
			return out
		}
	}
	t.Fatalf("node %s not listed: %v", id, rows)
	return nil
}

func TestNodes_DrainAndWeight(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 3)
	li := r.leader(t)
	via := (li + 1) % 3
	h := r.as(via, r.root)
	target := r.nodes[(li+2)%3].ID()

	res := h.run(t, "nodes", "drain", target).expect(t, exitOK)
	if want := "node " + target + " draining: dispatch sends it no new devices and its connected devices are moving to other nodes\n"; res.stdout != want {
		t.Fatalf("stdout %q", res.stdout)
	}
	waitFor(t, 2*time.Second, func() error {
		if row := nodeRow(t, h, target); row["DRAINING"] != "true" {
			return fmt.Errorf("after drain: %v", row)
		}
		return nil
	})
	h.run(t, "nodes", "drain", target, "--off").expect(t, exitOK)
	res = h.run(t, "nodes", "weight", target, "200").expect(t, exitOK)
	if res.stdout != "node "+target+" weight 200\n" {
		t.Fatalf("stdout %q", res.stdout)
	}
	waitFor(t, 2*time.Second, func() error {
		if row := nodeRow(t, h, target); row["DRAINING"] != "false" || row["WEIGHT"] != "200" {
			return fmt.Errorf("after drain --off and weight: %v", row)
		}
		return nil
	})
	applied := decodeJSON[Applied](t, h.run(t, "nodes", "weight", target, "100", "-o", "json").expect(t, exitOK))
	if applied.Index == 0 {
		t.Fatalf("weight JSON %+v", applied)
	}
	res = h.run(t, "nodes", "drain", "ghost").expect(t, exitFailure)
	if want := "pushctl: nodes drain ghost: apply member.drain: member \"ghost\": not found\n"; res.stderr != want {
		t.Errorf("stderr %q, want %q", res.stderr, want)
	}
}

// TestNodes_JoinAndRemove joins a real Raft node to a one-node region with
// pushctl, sees it listed (not alive: it runs no admin API), and removes
// it.
func TestNodes_JoinAndRemove(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 1)
	h := r.as(0, r.root)
	cfg := r.raft.Config(0)
	cfg.ID, cfg.DataDir, cfg.RaftBind = "node9", t.TempDir(), "127.0.0.1:0"
	s, err := raftmeta.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })

	// Nothing listens on the admin port of a closed listener.
	dead := "127.0.0.1:1"
	res := h.run(t, "nodes", "join", "--id", "node9", "--raft-addr", s.RaftAddr(), "--admin-addr", dead,
		"--device-addr", "ws://127.0.0.1:1/v1/ws", "--tcp-addr", "tcp://127.0.0.1:2", "--weight", "50").expect(t, exitOK)
	want := fmt.Sprintf("NODE         node9\nVOTER        true\nWEIGHT       50\nDRAINING     false\nRAFT_ADDR    %s\n"+
		"ADMIN_ADDR   %s\nDEVICE_ADDR  ws://127.0.0.1:1/v1/ws\nTCP_ADDR     tcp://127.0.0.1:2\nPUSH_ADDR    -\n", s.RaftAddr(), dead)
	if res.stdout != want {
		t.Fatalf("stdout\n%s\nwant\n%s", res.stdout, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitForLeader(ctx); err != nil {
		t.Fatalf("joined node sees no leader: %v", err)
	}
	out := h.run(t, "status").expect(t, exitOK).stdout
	if row := strings.Join(tableRows(out)[2], " "); row != "node9 - - - - - - false" {
		t.Fatalf("status row of the joined node %q:\n%s", row, out)
	}

	res = h.run(t, "nodes", "remove", "node9").expect(t, exitOK)
	if res.stdout != "removed node node9\n" {
		t.Fatalf("stdout %q", res.stdout)
	}
	_ = s.Close()
	rows := tableRows(h.run(t, "nodes", "list").expect(t, exitOK).stdout)
	if len(rows) != 2 || rows[1][0] != "node0" {
		t.Fatalf("after remove: %v", rows)
	}
}
