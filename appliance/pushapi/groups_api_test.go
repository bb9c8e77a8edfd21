package pushapi_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// callAPI sends a request with the test app's key and reads the answer.
func callAPI(t *testing.T, method, url, body string) apiAnswer {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answerOf(resp.StatusCode, resp.Header, b)
}

// Every bad request to the group and user endpoints is a JSON error with
// a stable code, and changes nothing.
func TestGroupsAPI_RefusesBadRequests(t *testing.T) {
	n := startNode(t, true)
	base := n.PushURL
	cases := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"members: not JSON", "POST", "/v1/groups/room/members", `{`, 400, "bad_json"},
		{"members: an unknown field", "POST", "/v1/groups/room/members", `{"app":"app1","op":"add","devices":["d"],"size":1}`, 400, "bad_json"},
		{"members: a key twice", "POST", "/v1/groups/room/members", `{"app":"app1","op":"add","op":"remove","devices":["d"]}`, 400, "bad_json"},
		{"members: no app", "POST", "/v1/groups/room/members", `{"op":"add","devices":["d"]}`, 400, "missing_field"},
		{"members: no op", "POST", "/v1/groups/room/members", `{"app":"app1","devices":["d"]}`, 400, "missing_field"},
		{"members: a bad op", "POST", "/v1/groups/room/members", `{"app":"app1","op":"join","devices":["d"]}`, 400, "invalid_field"},
		{"members: nobody", "POST", "/v1/groups/room/members", `{"app":"app1","op":"add"}`, 400, "missing_field"},
		{"members: a device twice", "POST", "/v1/groups/room/members", `{"app":"app1","op":"add","devices":["d","d"]}`, 400, "invalid_field"},
		{"members: no valid id", "POST", "/v1/groups/room/members", `{"app":"app1","op":"add","devices":["a b"],"users":[""]}`, 400, "invalid_field"},
		{"members: a group that is not an id", "POST", "/v1/groups/a%20b/members", `{"app":"app1","op":"add","devices":["d"]}`, 400, "invalid_field"},
		{"members: 1,001 members", "POST", "/v1/groups/room/members", `{"app":"app1","op":"add","devices":[` + strings.Repeat(`"d",`, 1000) + `"d"]}`, 400, "too_many_targets"},
		{"members: a PUT", "PUT", "/v1/groups/room/members", `{}`, 405, "method_not_allowed"},
		{"members: a page of 0", "GET", "/v1/groups/room/members?app=app1&count=0", ``, 400, "invalid_field"},
		{"members: a cursor it never gave", "GET", "/v1/groups/room/members?app=app1&cursor=x", ``, 400, "invalid_field"},
		{"members: GET without app", "GET", "/v1/groups/room/members", ``, 400, "missing_field"},
		{"stream: no max_len", "POST", "/v1/groups/room/stream", `{"app":"app1","max_age":"1m"}`, 400, "missing_field"},
		{"stream: no max_age", "POST", "/v1/groups/room/stream", `{"app":"app1","max_len":10}`, 400, "missing_field"},
		{"stream: max_age with off", "POST", "/v1/groups/room/stream", `{"app":"app1","max_len":0,"max_age":"1m"}`, 400, "invalid_field"},
		{"stream: max_len over 1,000", "POST", "/v1/groups/room/stream", `{"app":"app1","max_len":1001,"max_age":"1m"}`, 400, "invalid_field"},
		{"stream: a negative max_len", "POST", "/v1/groups/room/stream", `{"app":"app1","max_len":-1,"max_age":"1m"}`, 400, "invalid_field"},
		{"stream: max_age over a day", "POST", "/v1/groups/room/stream", `{"app":"app1","max_len":10,"max_age":"25h"}`, 400, "invalid_field"},
		{"stream: max_age not a duration", "POST", "/v1/groups/room/stream", `{"app":"app1","max_len":10,"max_age":"soon"}`, 400, "invalid_field"},
		{"user: not an id", "GET", "/v1/users/a%20b?app=app1", ``, 400, "invalid_field"},
		{"user: a POST", "POST", "/v1/users/alice?app=app1", `{}`, 405, "method_not_allowed"},
		{"push: users and devices", "POST", "/v1/push", `{"app":"app1","users":["u"],"devices":["d"],"data":"x"}`, 400, "missing_field"},
		{"push: a user not an id", "POST", "/v1/push", `{"app":"app1","users":["u","a b"],"data":"x"}`, 400, "invalid_field"},
		{"push: a user twice", "POST", "/v1/push", `{"app":"app1","users":["u","u"],"data":"x"}`, 400, "invalid_field"},
		{"push: users empty", "POST", "/v1/push", `{"app":"app1","users":[],"data":"x"}`, 400, "invalid_field"},
		{"push: a filter on devices", "POST", "/v1/push", `{"app":"app1","devices":["d"],"filter":{"tags":["vip"]},"data":"x"}`, 400, "invalid_field"},
		{"push: a bad filter", "POST", "/v1/push", `{"app":"app1","broadcast":true,"filter":{"tags":["a b"]},"data":"x"}`, 400, "invalid_field"},
		{"push: an unknown filter field", "POST", "/v1/push", `{"app":"app1","broadcast":true,"filter":{"os":["ios"]},"data":"x"}`, 400, "bad_json"},
	}
	for _, c := range cases {
		got := callAPI(t, c.method, base+c.path, c.body)
		if got.status != c.status || got.code != c.code {
			t.Errorf("%s: %d %s, want %d %s: %s", c.name, got.status, got.code, c.status, c.code, got.body)
		}
	}
	// A foreign key is 401 before any value is looked at.
	req, _ := http.NewRequest("POST", base+"/v1/groups/room/members", bytes.NewReader([]byte(`{"app":"app1","op":"add","devices":["d"]}`)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+otherAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a foreign key: HTTP %d, want 401", resp.StatusCode)
	}
	st, err := pushClient(t, n, testAPIKey).Group(context.Background(), testApp, "room", "", 0)
	if err != nil || st.Size != 0 || st.Stream.MaxLen != 0 {
		t.Fatalf("refused requests changed the group: %+v %v", st, err)
	}
}
