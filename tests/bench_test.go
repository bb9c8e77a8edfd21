package tests

import (
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestBench_LocalRunsReportEveryField runs the load tool's one-command
// forms, small: each starts a throwaway pushd --dev (--dev-tls for
// --tls), measures, stops it, and prints one JSON object with the
// documented fields and no loss.
// The runs go side by side, as throwaway servers on their own ports do.
// The default ports are held meanwhile, as a dev region running on the
// same host holds them: the throwaway server must not need any.
func TestBench_LocalRunsReportEveryField(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts three dev regions")
	}
	for _, addr := range []string{":8080", ":8081", ":8090", ":8091", ":8092"} {
		// A port something else holds already is held all the same.
		if l, err := net.Listen("tcp", addr); err == nil {
			t.Cleanup(func() { l.Close() })
		}
	}
	cases := []struct {
		name   string
		args   []string
		fields []string
	}{
		{"connect", []string{"bench", "connect", "--local", "--conns", "300", "--hold", "1s", "--heartbeat", "1s", "--json"},
			[]string{"scenario", "conns", "connect_per_s", "errors", "server_rss_bytes", "rss_bytes_per_conn", "duration_s"}},
		{"push stored", []string{"bench", "push", "--local", "--mode", "stored", "--devices", "50", "--batch", "10", "--pushes", "2000", "--json"},
			[]string{"scenario", "mode", "devices", "pushes", "pushes_per_s", "latency_ms", "lost", "duplicates", "errors", "redis_cpu_us_per_push"}},
		{"push online", []string{"bench", "push", "--local", "--devices", "50", "--batch", "10", "--rate", "500", "--duration", "2s", "--json"},
			[]string{"scenario", "mode", "devices", "pushes", "pushes_per_s", "latency_ms", "lost", "duplicates", "errors"}},
		// TLS on every hop: wss devices, https push API, Redis over TLS.
		{"push online tls", []string{"bench", "push", "--local", "--tls", "--devices", "50", "--batch", "10", "--rate", "500", "--duration", "2s", "--json"},
			[]string{"scenario", "mode", "transport", "devices", "pushes", "pushes_per_s", "latency_ms", "lost", "duplicates", "errors"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(filepath.Join(bin, "pushctl"), c.args...)
			cmd.Dir = t.TempDir()
			out, err := cmd.Output()
			if err != nil {
				var stderr []byte
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = ee.Stderr
				}
				t.Fatalf("pushctl %v: %v\n%s\n%s", c.args, err, out, stderr)
			}
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("not one JSON object: %v\n%s", err, out)
			}
			for _, f := range c.fields {
				if _, ok := got[f]; !ok {
					t.Errorf("field %q missing from %s", f, out)
				}
			}
			for _, f := range []string{"errors", "lost", "duplicates"} {
				if v, ok := got[f]; ok && v != 0.0 {
					t.Errorf("%s = %v: %s", f, v, out)
				}
			}
			if lat, ok := got["latency_ms"].(map[string]any); ok {
				for _, q := range []string{"p50", "p99", "max"} {
					if _, ok := lat[q]; !ok {
						t.Errorf("latency_ms.%s missing: %s", q, out)
					}
				}
			}
			if tr, _ := got["transport"].(string); c.name == "push online tls" && tr != "wss" {
				t.Errorf("transport %q over TLS: %s", tr, out)
			}
			if c.name == "connect" {
				if per, _ := got["rss_bytes_per_conn"].(float64); per <= 0 {
					t.Errorf("rss_bytes_per_conn %v: %s", got["rss_bytes_per_conn"], out)
				}
			}
		})
	}
}
