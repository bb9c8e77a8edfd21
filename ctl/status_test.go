package ctl

import (
	"testing"
	"time"
)

func TestStatus_ThreeNodesOneLeader(t *testing.T) {
	t.Parallel()
	start := time.Now()
	r := startTestRegion(t, 3)
	t.Log("region", time.Since(start))
	res := r.as(0, r.root).run(t, "status").expect(t, exitOK)
	t.Log("status", time.Since(start))
	res = r.as(1, r.root).run(t, "nodes", "list").expect(t, exitOK)
	t.Logf("\n%s", res.stdout)
	t.Log("list", time.Since(start))
}
