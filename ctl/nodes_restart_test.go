package ctl

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/poll"
)

// TestNodes_RestartPlan: the plan restarts the followers by id, then the
// leader, each followed by a wait for it; as a script and as JSON.
func TestNodes_RestartPlan(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 3)
	h := r.as(0, r.Viewer)
	leader := r.Nodes[r.leader(t)].ID()
	var followers []string
	for _, n := range r.Nodes {
		if n.ID() != leader {
			followers = append(followers, n.ID())
		}
	}
	order := append(followers, leader)

	plan := decodeJSON[restartPlan](t, h.run(t, "nodes", "restart-plan", "-o", "json").expect(t, exitOK))
	if plan.Leader != leader || len(plan.Steps) != 3 {
		t.Fatalf("plan %+v", plan)
	}
	for i, s := range plan.Steps {
		if s.Node != order[i] || s.Host != "127.0.0.1" || s.Restart != "ssh 127.0.0.1 sudo systemctl restart pushd" ||
			s.Wait != "pushctl nodes wait "+order[i]+" --timeout 2m" {
			t.Fatalf("step %d %+v, want node %s", i, s, order[i])
		}
	}
	if plan.Steps[2].RaftState != "Leader" {
		t.Fatalf("last step %+v", plan.Steps[2])
	}

	script := h.run(t, "nodes", "restart-plan", "--command", "systemctl -H root@{host} restart pushd # {node}").expect(t, exitOK).stdout
	if !strings.HasPrefix(script, "#!/bin/sh\n# Rolling restart of the region's 3 nodes, one at a time, the Raft leader ("+leader+") last.\n") ||
		!strings.Contains(script, "\nset -e\n") {
		t.Fatalf("script:\n%s", script)
	}
	var steps []string
	for _, m := range regexp.MustCompile(`(?m)^# (\d)/3 (\S+): (\w+), 0 devices\nsystemctl -H root@127.0.0.1 restart pushd # (\S+)\npushctl nodes wait (\S+) --timeout 2m$`).FindAllStringSubmatch(script, -1) {
		if m[2] != m[4] || m[2] != m[5] {
			t.Fatalf("step %q names different nodes", m[0])
		}
		steps = append(steps, m[2])
	}
	if strings.Join(steps, " ") != strings.Join(order, " ") {
		t.Fatalf("steps %v, want %v:\n%s", steps, order, script)
	}
}

// TestNodes_RestartPlanRefusesWhileANodeIsDown: restarting a node while
// another is down could leave Raft without a majority.
func TestNodes_RestartPlanRefusesWhileANodeIsDown(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 3)
	down := (r.leader(t) + 1) % 3
	id := r.Nodes[down].ID()
	r.Kill(t, down)
	h := r.as((down+1)%3, r.Viewer)
	res := h.run(t, "nodes", "restart-plan").expect(t, exitFailure)
	if want := "pushctl: nodes restart-plan: node " + id + " is not healthy (it does not answer): bring it back, or remove it, before restarting another\n"; res.stderr != want {
		t.Fatalf("stderr %q, want %q", res.stderr, want)
	}
	if res.stdout != "" {
		t.Fatalf("stdout %q", res.stdout)
	}
	h.run(t, "nodes", "restart-plan", "--command", " ").expect(t, exitUsage)
	h.run(t, "nodes", "restart-plan", "extra").expect(t, exitUsage)
}

// TestNodes_Wait: a healthy node is reported at once; a draining one is
// waited for until it is healthy again, or until the timeout.
func TestNodes_Wait(t *testing.T) {
	t.Parallel()
	r := startTestRegion(t, 3)
	h := r.as(0, r.Admin)
	id := r.Nodes[2].ID()
	res := h.run(t, "nodes", "wait", id).expect(t, exitOK)
	if !regexp.MustCompile(`^node ` + id + ` healthy after [0-9.]+m?s: (Leader|Follower), redis up, 0 devices\n$`).MatchString(res.stdout) {
		t.Fatalf("stdout %q", res.stdout)
	}
	w := decodeJSON[nodeWaited](t, h.run(t, "nodes", "wait", id, "-o", "json").expect(t, exitOK))
	if !w.Healthy || w.Node != id {
		t.Fatalf("%+v", w)
	}

	h.run(t, "nodes", "drain", id).expect(t, exitOK)
	poll.Until(t, 5*time.Second, func() error {
		res = h.run(t, "nodes", "wait", id, "--timeout", "300ms")
		if res.code != exitFailure {
			return fmt.Errorf("exit %d: %s", res.code, res.stdout)
		}
		return nil
	})
	if want := "pushctl: nodes wait " + id + ": not healthy after 300ms: it is draining\n"; res.stderr != want {
		t.Fatalf("stderr %q, want %q", res.stderr, want)
	}
	_, _, stop, done := h.start(t, "nodes", "wait", id, "--timeout", "30s")
	time.AfterFunc(300*time.Millisecond, func() { r.as(1, r.Admin).run(t, "nodes", "drain", id, "--off") })
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("wait did not end once the drain was lifted")
	}
	if res := stop(); res.code != exitOK || !strings.Contains(res.stdout, "healthy after") {
		t.Fatalf("wait: exit %d, %q %q", res.code, res.stdout, res.stderr)
	}

	res = h.run(t, "nodes", "wait", "ghost").expect(t, exitFailure)
	if res.stderr != "pushctl: nodes wait ghost: not a member of the region\n" {
		t.Fatalf("stderr %q", res.stderr)
	}
	h.run(t, "nodes", "wait", id, "--timeout", "0s").expect(t, exitUsage)
	h.run(t, "nodes", "wait").expect(t, exitUsage)
}
