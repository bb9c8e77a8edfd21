package api

import (
	"strings"
	"testing"
)

// TestDecodeStrict_RefusesDuplicateKeysAtAnyDepth: a key given twice is
// refused wherever it is (top level, a nested struct, a map, an object
// inside an array, an object under any), as is a field matched only by
// case; what is left decodes as encoding/json would.
func TestDecodeStrict_RefusesDuplicateKeysAtAnyDepth(t *testing.T) {
	type inner struct {
		Name string `json:"name"`
	}
	type embedded struct {
		Limit int `json:"limit"`
	}
	type body struct {
		ID    string            `json:"id"`
		Inner inner             `json:"inner"`
		List  []inner           `json:"list"`
		Tags  map[string]string `json:"tags"`
		Any   any               `json:"any"`
		Skip  string            `json:"-"`
		embedded
	}
	for _, c := range []struct{ name, in, want string }{
		{"top level", `{"id":"a","id":"b"}`, `key "id" given twice`},
		{"escaped", `{"id":"a","\u0069d":"b"}`, `key "id" given twice`},
		{"in a nested struct", `{"inner":{"name":"a","name":"b"}}`, `key "inner.name" given twice`},
		{"in an array element", `{"list":[{"name":"a"},{"name":"a","name":"b"}]}`, `key "list.1.name" given twice`},
		{"in a map", `{"tags":{"k":"a","k":"b"}}`, `key "tags.k" given twice`},
		{"under any", `{"any":[{"x":{"y":1,"y":2}}]}`, `key "any.0.x.y" given twice`},
		{"an embedded field", `{"limit":1,"limit":2}`, `key "limit" given twice`},
		{"miscased", `{"ID":"a"}`, `unknown field "ID" (field names are case-sensitive: "id")`},
		{"miscased beside the real one", `{"id":"a","Id":"b"}`, `unknown field "Id"`},
		{"miscased, nested", `{"inner":{"Name":"a"}}`, `unknown field "inner.Name"`},
		{"a skipped field", `{"Skip":"a"}`, `unknown field "Skip"`},
		{"unknown", `{"nope":1}`, `unknown field "nope"`},
		{"trailing", `{"id":"a"} {}`, "trailing data"},
		{"empty", ``, "unexpected end"},
		{"cut short", `{"id":"a"`, "unexpected end"},
		{"not UTF-8", "{\"id\":\"\xff\"}", "not UTF-8"},
		{"too deep", `{"any":` + strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth) + `}`, "nested deeper"},
		{"a wrong type", `{"id":1}`, "cannot unmarshal number"},
	} {
		var b body
		err := DecodeStrict([]byte(c.in), &b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %s: error %v, want one containing %q", c.name, c.in, err, c.want)
		}
	}

	var b body
	in := `{"id":"a","inner":{"name":"n"},"list":[{"name":"x"},{"name":"y"}],"tags":{"k":"v","K":"w"},` +
		`"any":{"x":[{"y":1},{"y":2}]},"limit":3}`
	if err := DecodeStrict([]byte(in), &b); err != nil {
		t.Fatal(err)
	}
	if b.ID != "a" || b.Inner.Name != "n" || len(b.List) != 2 || b.List[1].Name != "y" || b.Tags["K"] != "w" || b.Limit != 3 || b.Any == nil {
		t.Fatalf("decoded %+v", b)
	}
}
