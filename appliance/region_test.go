package appliance

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// The region tests moved to appliance/adminapi (issue 9). adminDo stays
// while browser_test.go uses it.

// adminDo calls a node's admin API.
func adminDo(t testing.TB, n *Node, method, path, tok string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+n.Addrs().Admin+path, rd)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}
