package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
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
	h := r.as(via, r.Admin)
	target := r.Nodes[(li+2)%3].ID()

	res := h.run(t, "nodes", "drain", target).expect(t, exitOK)
	if want := "node " + target + " draining: dispatch sends it no new devices and its connected devices are moving to other nodes\n"; res.stdout != want {
		t.Fatalf("stdout %q", res.stdout)
	}
	poll.Until(t, 2*time.Second, func() error {
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
	poll.Until(t, 2*time.Second, func() error {
		if row := nodeRow(t, h, target); row["DRAINING"] != "false" || row["WEIGHT"] != "200" {
			return fmt.Errorf("after drain --off and weight: %v", row)
		}
		return nil
	})
	applied := decodeJSON[api.Applied](t, h.run(t, "nodes", "weight", target, "100", "-o", "json").expect(t, exitOK))
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
// it. The second node of a region waits as a non-voter (voters stay odd).
// Both changes are audited as the admin token that made them, and a
// remove sent again with its request id, as after a lost answer, is
// answered like the first.
func TestNodes_JoinAndRemove(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 1)
	h := r.as(0, r.Admin)
	cfg := r.Raft.Config(0)
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
	want := fmt.Sprintf("NODE         node9\nVOTER        false\nWEIGHT       50\nDRAINING     false\nRAFT_ADDR    %s\n"+
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

	audit := map[string]raftmeta.AuditEntry{}
	for _, e := range r.Raft.Store(0).State().Audit {
		if e.Target == "node9" {
			audit[e.Op] = e
		}
	}
	for _, op := range []string{"member.upsert", "member.remove"} {
		if e, ok := audit[op]; !ok || e.Actor != "root" || e.RequestID == "" {
			t.Errorf("%s of node9 audited as %+v, want actor root with a request id", op, e)
		}
	}
	// The remove's answer was lost: sent again with its request id, it is
	// answered as the first time.
	code, body := postAdmin(t, r, "/v1/admin/nodes/node9/remove", audit["member.remove"].RequestID)
	if code != http.StatusOK || strings.TrimSpace(body) != `{"removed":"node9"}` {
		t.Fatalf("remove retried with its request id: HTTP %d %s", code, body)
	}
	// A new remove of the removed node is told it is not there.
	res = h.run(t, "nodes", "remove", "node9").expect(t, exitFailure)
	if !strings.Contains(res.stderr, "not found") {
		t.Fatalf("second remove: stderr %q", res.stderr)
	}
}

// postAdmin posts an empty admin write to node 0 as root with requestID
// and returns the answer.
func postAdmin(t *testing.T, r *testRegion, path, requestID string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.Nodes[0].AdminURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.Admin)
	req.Header.Set("X-Request-ID", requestID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
