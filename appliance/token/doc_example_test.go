package token_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/token"
	"github.com/pushd/pushd/internal/protodoc"
)

type oneKey struct {
	app, kid string
	secret   []byte
}

func (k oneKey) TokenSecret(app, kid string) ([]byte, bool) {
	if app != k.app {
		return nil, false
	}
	if kid != k.kid {
		return nil, true
	}
	return k.secret, true
}

// TestDocExample_MintsTheSameToken checks the worked example of
// docs/protocol.md §8.2 step by step with the standard library, then
// against Issue and Verify: a client that follows the document byte for
// byte mints the token pushd accepts, and one that keys the HMAC with the
// base64 text is refused with ErrSignature.
func TestDocExample_MintsTheSameToken(t *testing.T) {
	md, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	d, err := protodoc.Parse(md)
	if err != nil {
		t.Fatal(err)
	}
	ex := d.Token
	for _, k := range []string{"secret_base64", "secret_hex", "claims", "claims_b64url", "signed", "hmac_hex", "sig_b64url", "token", "wrong_key_sig"} {
		if ex[k] == "" {
			t.Fatalf("the token example has no %s line", k)
		}
	}

	// Step by step, as a client in another language would.
	secret, err := base64.StdEncoding.Strict().DecodeString(ex["secret_base64"])
	if err != nil {
		t.Fatalf("secret_base64: %v", err)
	}
	if got := hex.EncodeToString(secret); got != ex["secret_hex"] {
		t.Errorf("secret_base64 decodes to %s, the example says %s", got, ex["secret_hex"])
	}
	if got := base64.RawURLEncoding.EncodeToString([]byte(ex["claims"])); got != ex["claims_b64url"] {
		t.Errorf("claims encode to %s, the example says %s", got, ex["claims_b64url"])
	}
	if got := "v1." + ex["claims_b64url"]; got != ex["signed"] {
		t.Errorf("signed string %s, the example says %s", got, ex["signed"])
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ex["signed"]))
	sum := mac.Sum(nil)
	if got := hex.EncodeToString(sum); got != ex["hmac_hex"] {
		t.Errorf("HMAC %s, the example says %s", got, ex["hmac_hex"])
	}
	if got := base64.RawURLEncoding.EncodeToString(sum); got != ex["sig_b64url"] {
		t.Errorf("signature %s, the example says %s", got, ex["sig_b64url"])
	}
	if got := ex["signed"] + "." + ex["sig_b64url"]; got != ex["token"] {
		t.Errorf("token %s, the example says %s", got, ex["token"])
	}
	wrong := hmac.New(sha256.New, []byte(ex["secret_base64"]))
	wrong.Write([]byte(ex["signed"]))
	if got := base64.RawURLEncoding.EncodeToString(wrong.Sum(nil)); got != ex["wrong_key_sig"] {
		t.Errorf("HMAC keyed with the base64 text gives %s, the example says %s", got, ex["wrong_key_sig"])
	}

	// The reference issuer writes the same claims and token.
	var c token.Claims
	if err := json.Unmarshal([]byte(ex["claims"]), &c); err != nil {
		t.Fatal(err)
	}
	issued, err := token.Issue(c, secret)
	if err != nil {
		t.Fatal(err)
	}
	if issued != ex["token"] {
		t.Errorf("token.Issue gives\n\t%s\nthe example says\n\t%s", issued, ex["token"])
	}

	// And the verifier accepts it over the window the document gives,
	// and refuses the one signed with the base64 text.
	keys := oneKey{app: c.App, kid: c.KeyID, secret: secret}
	for _, at := range []int64{c.Expires - 86430, c.Expires - 3600, c.Expires + 29} {
		if _, err := token.Verify(ex["token"], keys, c.App, c.Device, time.Unix(at, 0)); err != nil {
			t.Errorf("verify at exp%+d s: %v", at-c.Expires, err)
		}
	}
	if _, err := token.Verify(ex["token"], keys, c.App, c.Device, time.Unix(c.Expires-86431, 0)); !errors.Is(err, token.ErrLifetime) {
		t.Errorf("verify at exp-86431 s: %v, want ErrLifetime", err)
	}
	if _, err := token.Verify(ex["token"], keys, c.App, c.Device, time.Unix(c.Expires+30, 0)); !errors.Is(err, token.ErrExpired) {
		t.Errorf("verify at exp+30 s: %v, want ErrExpired", err)
	}
	forged := ex["signed"] + "." + ex["wrong_key_sig"]
	if _, err := token.Verify(forged, keys, c.App, c.Device, time.Unix(c.Expires-60, 0)); !errors.Is(err, token.ErrSignature) {
		t.Errorf("the token keyed with the base64 text: %v, want ErrSignature", err)
	}
}
