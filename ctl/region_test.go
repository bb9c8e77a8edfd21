package ctl

import (
	"strings"
	"testing"

	"github.com/pushd/pushd/appliance/appliancetest"
)

// testRegion is a pushd region in the test process (appliancetest): real
// Raft over loopback TCP, one real redis-server, and a node with its
// push API and admin API on each Raft node, registered in the member
// list as pushd registers itself. Admin is an admin-role token with the
// id "root", Viewer a viewer-role one with the id "watcher".
type testRegion struct {
	*appliancetest.Region
}

func startTestRegion(t *testing.T, size int) *testRegion {
	t.Helper()
	return startTestRegionWith(t, size, appliancetest.RegionOptions{})
}

func startTestRegionWith(t *testing.T, size int, opts appliancetest.RegionOptions) *testRegion {
	t.Helper()
	return &testRegion{appliancetest.StartRegion(t, size, opts)}
}

// env points pushctl at node i's admin API with token (none when "").
func (r *testRegion) env(i int, token string) map[string]string {
	e := map[string]string{"PUSHD_ADMIN_URL": r.Nodes[i].AdminURL}
	if token != "" {
		e["PUSHD_ADMIN_TOKEN"] = token
	}
	return e
}

// as runs pushctl against node i with token.
func (r *testRegion) as(i int, token string) harness { return harness{env: r.env(i, token)} }

func (r *testRegion) leader(t *testing.T) int {
	t.Helper()
	return r.LeaderIndex(t)
}

// tableRows splits a table's output into its cells, header first.
func tableRows(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if line == "" {
			break
		}
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

// kvRows reads the key-value block of a table output: the block after
// the first blank line (up to the next one) when there is one, else the
// whole output.
func kvRows(out string) map[string]string {
	if _, after, ok := strings.Cut(out, "\n\n"); ok {
		out, _, _ = strings.Cut(after, "\n\n")
	}
	kv := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, " ")
		kv[k] = strings.TrimSpace(v)
	}
	return kv
}
