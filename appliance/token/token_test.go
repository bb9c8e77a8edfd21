package token

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	secret1 = bytes.Repeat([]byte{1}, 32)
	secret2 = bytes.Repeat([]byte{2}, 32)
	now     = time.Unix(1_800_000_000, 0)
)

type keyTable map[string]map[string][]byte

func (k keyTable) TokenSecret(app, kid string) ([]byte, bool) {
	keys, ok := k[app]
	if !ok {
		return nil, false
	}
	return keys[kid], true
}

var keys = keyTable{"app1": {"k1": secret1, "k2": secret2}, "app2": {"k1": secret2}}

func claims() Claims {
	return Claims{App: "app1", Device: "dev-1", KeyID: "k1", Expires: now.Add(time.Hour).Unix()}
}

func mustIssue(t *testing.T, c Claims, secret []byte) string {
	t.Helper()
	tok, err := Issue(c, secret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestVerify_Accepts(t *testing.T) {
	c := claims()
	c.User = "user-9"
	c.Tags = []string{"beta", "vip"}
	c.NotBefore = now.Add(-time.Minute).Unix()
	got, err := Verify(mustIssue(t, c, secret1), keys, "app1", "dev-1", now)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("claims = %+v, want %+v", got, c)
	}
	// A rotated-in key id verifies with its own secret.
	c.KeyID = "k2"
	if _, err := Verify(mustIssue(t, c, secret2), keys, "app1", "dev-1", now); err != nil {
		t.Fatalf("second key id: %v", err)
	}
}

func TestVerify_RejectsEveryBadToken(t *testing.T) {
	valid := mustIssue(t, claims(), secret1)
	with := func(mut func(*Claims)) string {
		c := claims()
		mut(&c)
		return mustIssue(t, c, secret1)
	}
	dot := strings.LastIndexByte(valid, '.')
	cases := []struct {
		name    string
		tok     string
		app     string
		device  string
		wantErr error
	}{
		{"expired", with(func(c *Claims) { c.Expires = now.Add(-time.Minute).Unix() }), "app1", "dev-1", ErrExpired},
		{"expired just past the leeway", with(func(c *Claims) { c.Expires = now.Add(-Leeway).Unix() }), "app1", "dev-1", ErrExpired},
		{"not yet valid", with(func(c *Claims) { c.NotBefore = now.Add(time.Hour).Unix(); c.Expires = now.Add(2 * time.Hour).Unix() }), "app1", "dev-1", ErrNotYetValid},
		{"lifetime over 24h", with(func(c *Claims) { c.Expires = now.Add(25 * time.Hour).Unix() }), "app1", "dev-1", ErrLifetime},
		{"forged signature", valid[:dot+1] + base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)), "app1", "dev-1", ErrSignature},
		{"signed with another secret", mustIssue(t, claims(), secret2), "app1", "dev-1", ErrSignature},
		{"claims altered after signing", alterClaims(t, valid), "app1", "dev-1", ErrSignature},
		{"other app", valid, "app2", "dev-1", ErrWrongApp},
		{"other device", valid, "app1", "dev-2", ErrWrongDevice},
		{"unknown app", with(func(c *Claims) { c.App = "app9" }), "app9", "dev-1", ErrUnknownApp},
		{"unknown key id", with(func(c *Claims) { c.KeyID = "k9" }), "app1", "dev-1", ErrUnknownKey},
		{"empty", "", "app1", "dev-1", ErrMalformed},
		{"no prefix", strings.TrimPrefix(valid, "v1."), "app1", "dev-1", ErrMalformed},
		{"v2", "v2" + valid[2:], "app1", "dev-1", ErrMalformed},
		{"one part", "v1.abc", "app1", "dev-1", ErrMalformed},
		{"bad base64", "v1.!!!." + valid[dot+1:], "app1", "dev-1", ErrMalformed},
		{"short signature", valid[:dot+1] + "AAAA", "app1", "dev-1", ErrMalformed},
		{"not json", "v1." + base64.RawURLEncoding.EncodeToString([]byte("hello")) + valid[dot:], "app1", "dev-1", ErrMalformed},
		{"unknown field", "v1." + base64.RawURLEncoding.EncodeToString([]byte(`{"app":"app1","dev":"dev-1","kid":"k1","exp":1900000000,"admin":true}`)) + valid[dot:], "app1", "dev-1", ErrMalformed},
		{"no expiry", "v1." + base64.RawURLEncoding.EncodeToString([]byte(`{"app":"app1","dev":"dev-1","kid":"k1"}`)) + valid[dot:], "app1", "dev-1", ErrMalformed},
		{"bad device id", "v1." + base64.RawURLEncoding.EncodeToString([]byte(`{"app":"app1","dev":"a b","kid":"k1","exp":1900000000}`)) + valid[dot:], "app1", "a b", ErrMalformed},
		{"too long", "v1." + strings.Repeat("A", MaxLen), "app1", "dev-1", ErrMalformed},
		{"a tag that is not an id", "v1." + base64.RawURLEncoding.EncodeToString([]byte(`{"app":"app1","dev":"dev-1","kid":"k1","exp":1900000000,"tags":["a b"]}`)) + valid[dot:], "app1", "dev-1", ErrMalformed},
		{"a tag given twice", "v1." + base64.RawURLEncoding.EncodeToString([]byte(`{"app":"app1","dev":"dev-1","kid":"k1","exp":1900000000,"tags":["x","x"]}`)) + valid[dot:], "app1", "dev-1", ErrMalformed},
		{"tags not a list", "v1." + base64.RawURLEncoding.EncodeToString([]byte(`{"app":"app1","dev":"dev-1","kid":"k1","exp":1900000000,"tags":"vip"}`)) + valid[dot:], "app1", "dev-1", ErrMalformed},
		{"17 tags", "v1." + base64.RawURLEncoding.EncodeToString([]byte(`{"app":"app1","dev":"dev-1","kid":"k1","exp":1900000000,"tags":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"]}`)) + valid[dot:], "app1", "dev-1", ErrMalformed},
		{"trailing json", "v1." + base64.RawURLEncoding.EncodeToString([]byte(`{"app":"app1","dev":"dev-1","kid":"k1","exp":1900000000}{}`)) + valid[dot:], "app1", "dev-1", ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Verify(c.tok, keys, c.app, c.device, now)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("err = %v, want %v", err, c.wantErr)
			}
		})
	}
}

func TestVerify_LeewayBoundaries(t *testing.T) {
	c := claims()
	c.Expires = now.Add(-Leeway + time.Second).Unix()
	if _, err := Verify(mustIssue(t, c, secret1), keys, "app1", "dev-1", now); err != nil {
		t.Fatalf("expired by less than the leeway: %v", err)
	}
	c = claims()
	c.NotBefore = now.Add(Leeway - time.Second).Unix()
	if _, err := Verify(mustIssue(t, c, secret1), keys, "app1", "dev-1", now); err != nil {
		t.Fatalf("not-before within the leeway: %v", err)
	}
	c = claims()
	c.Expires = now.Add(MaxLifetime).Unix()
	if _, err := Verify(mustIssue(t, c, secret1), keys, "app1", "dev-1", now); err != nil {
		t.Fatalf("exactly the maximum lifetime: %v", err)
	}
}

func TestIssue_RejectsBadInput(t *testing.T) {
	if _, err := Issue(claims(), []byte("short")); err == nil {
		t.Fatal("accepted a short secret")
	}
	c := claims()
	c.Device = ""
	if _, err := Issue(c, secret1); err == nil {
		t.Fatal("accepted an empty device")
	}
}

func TestValidID(t *testing.T) {
	for _, ok := range []string{"a", "dev-1", "A.b_c:d", strings.Repeat("x", 128)} {
		if !ValidID(ok) {
			t.Errorf("ValidID(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "a b", "a/b", "ü", "{tag}", strings.Repeat("x", 129)} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

// signClaims signs raw claims JSON with secret1, so that a token it makes
// is refused, if at all, for its claims alone.
func signClaims(claimsJSON string) string {
	signed := prefix + base64.RawURLEncoding.EncodeToString([]byte(claimsJSON))
	return signed + "." + base64.RawURLEncoding.EncodeToString(sign(secret1, signed))
}

// strictClaims are claim sets encoding/json alone would accept, each signed
// validly for app1/dev-1: keys in another case, repeated keys, and JSON
// after the object.
var strictClaims = []struct{ name, json string }{
	{"key in upper case", `{"APP":"app1","dev":"dev-1","kid":"k1","exp":1800003600}`},
	{"key in mixed case", `{"app":"app1","Dev":"dev-1","kid":"k1","exp":1800003600}`},
	{"optional key in upper case", `{"app":"app1","dev":"dev-1","USR":"u1","kid":"k1","exp":1800003600}`},
	{"repeated key, same value", `{"app":"app1","app":"app1","dev":"dev-1","kid":"k1","exp":1800003600}`},
	{"repeated key, the last would win", `{"app":"app1","dev":"dev-2","dev":"dev-1","kid":"k1","exp":1800003600}`},
	{"repeated key in another case", `{"app":"app1","dev":"dev-1","Dev":"dev-1","kid":"k1","exp":1800003600}`},
	{"repeated expiry", `{"app":"app1","dev":"dev-1","kid":"k1","exp":1800003600,"exp":1800000600}`},
	{"repeated optional key", `{"app":"app1","dev":"dev-1","usr":"u1","usr":"u2","kid":"k1","exp":1800003600}`},
	{"closing bracket after the object", `{"app":"app1","dev":"dev-1","kid":"k1","exp":1800003600}]`},
	{"closing brace after the object", `{"app":"app1","dev":"dev-1","kid":"k1","exp":1800003600}}`},
	{"array", `[{"app":"app1","dev":"dev-1","kid":"k1","exp":1800003600}]`},
	{"null", `null`},
	{"string claim as number", `{"app":"app1","dev":"dev-1","kid":1,"exp":1800003600}`},
}

func TestVerify_RejectsLooseClaimsJSON(t *testing.T) {
	for _, c := range strictClaims {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Verify(signClaims(c.json), keys, "app1", "dev-1", now); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestVerify_AcceptsAnyKeyOrderAndSpacing(t *testing.T) {
	tok := signClaims(" {\n\t\"exp\" : 1800003600, \"kid\":\"k1\",\"usr\":\"u1\", \"dev\":\"dev-1\",\"nbf\":1799999000,\"app\":\"app1\"}\n")
	got, err := Verify(tok, keys, "app1", "dev-1", now)
	if err != nil {
		t.Fatal(err)
	}
	want := Claims{App: "app1", Device: "dev-1", User: "u1", Expires: 1800003600, NotBefore: 1799999000, KeyID: "k1"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("claims = %+v, want %+v", got, want)
	}
}

// alterClaims swaps the claims part of tok for one naming another device
// while keeping the original signature.
func alterClaims(t *testing.T, tok string) string {
	t.Helper()
	c := claims()
	c.Device = "dev-1"
	c.User = "intruder"
	other := mustIssue(t, c, secret2)
	dot := strings.LastIndexByte(tok, '.')
	odot := strings.LastIndexByte(other, '.')
	return other[:odot] + tok[dot:]
}

// FuzzParse checks that no input makes the parser panic and that anything
// it accepts has valid ids and a positive expiry.
func FuzzParse(f *testing.F) {
	f.Add("v1.eyJhcHAiOiJhIiwiZGV2IjoiZCIsImtpZCI6ImsiLCJleHAiOjF9.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("v1..")
	f.Add("")
	if tok, err := Issue(claims(), secret1); err == nil {
		f.Add(tok)
	}
	for _, c := range strictClaims {
		f.Add(signClaims(c.json))
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := Parse(tok)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v is not ErrMalformed", err)
			}
			return
		}
		if !ValidID(c.App) || !ValidID(c.Device) || !ValidID(c.KeyID) || c.Expires <= 0 || len(c.Tags) > MaxTags {
			t.Fatalf("accepted invalid claims %+v", c)
		}
		body, err := base64.RawURLEncoding.DecodeString(tok[len(prefix):strings.LastIndexByte(tok, '.')])
		if err != nil {
			t.Fatalf("accepted claims that are not base64url: %v", err)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			t.Fatalf("accepted claims that are not a JSON object: %v", err)
		}
		for k := range fields {
			switch k {
			case "app", "dev", "usr", "exp", "nbf", "kid", "tags":
			default:
				t.Fatalf("accepted claim key %q", k)
			}
		}
		if _, err := Verify(tok, keys, c.App, c.Device, now); err == nil && !strings.HasPrefix(tok, "v1.") {
			t.Fatalf("verified a token without the v1 prefix")
		}
	})
}
