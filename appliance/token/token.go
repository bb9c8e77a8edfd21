// Package token issues and verifies pushd device tokens.
//
// A device token proves that the business behind an app allowed one device
// (and optionally one user) to connect until an expiry. It is an
// HMAC-SHA256, keyed with a per-app secret, over a small JSON claim set:
//
//	v1.<base64url(claims JSON)>.<base64url(HMAC-SHA256(secret, "v1." + base64url(claims JSON)))>
//
// The simplest use:
//
//	tok, err := token.Issue(token.Claims{App: "a", Device: "d", KeyID: "k1",
//		Expires: time.Now().Add(time.Hour).Unix()}, secret)
//	claims, err := token.Verify(tok, keys, "a", "d", time.Now())
//
// Every way a token can be wrong has its own error, so a refused device
// learns why with a stable code. Functions are safe for concurrent use.
package token

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Verification errors. Each is distinct so the handshake can report a
// stable code.
var (
	// ErrMalformed means the token does not have the v1 structure, its
	// parts are not base64url, or its claims are not the expected JSON.
	ErrMalformed = errors.New("token malformed")
	// ErrExpired means now is past the token's expiry.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid means now is before the token's not-before time.
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrSignature means the HMAC does not match: forged, altered, or
	// signed with another secret.
	ErrSignature = errors.New("token signature invalid")
	// ErrWrongApp means the token was issued for another app.
	ErrWrongApp = errors.New("token issued for another app")
	// ErrWrongDevice means the token was issued for another device.
	ErrWrongDevice = errors.New("token issued for another device")
	// ErrUnknownApp means no secret is known for the token's app.
	ErrUnknownApp = errors.New("unknown app")
	// ErrUnknownKey means the app has no secret with the token's key id
	// (for example, it was rotated out).
	ErrUnknownKey = errors.New("unknown token key id")
	// ErrLifetime means the token's validity window is longer than
	// MaxLifetime.
	ErrLifetime = errors.New("token lifetime too long")
)

const (
	// MaxLifetime is the longest validity a token may have: from its
	// not-before (or from now, when it has none) to its expiry.
	MaxLifetime = 24 * time.Hour
	// Leeway absorbs clock skew between the issuer and pushd nodes in the
	// expiry and not-before checks.
	Leeway = 30 * time.Second
	// MaxLen bounds an encoded token; longer input is malformed before any
	// decoding work is done.
	MaxLen = 2048
	// MinSecretLen is the shortest secret accepted: 256 bits.
	MinSecretLen = 32

	prefix = "v1."
)

// Claims is what a token asserts. Times are unix seconds.
type Claims struct {
	App       string `json:"app"`
	Device    string `json:"dev"`
	User      string `json:"usr,omitempty"`
	Expires   int64  `json:"exp"`
	NotBefore int64  `json:"nbf,omitempty"`
	KeyID     string `json:"kid"`
	// Tags are what the business says about the session, for broadcast
	// and group filters: at most MaxTags ids, each once. They come only
	// from the token, so a device cannot give itself one.
	Tags []string `json:"tags,omitempty"`
}

// MaxTags bounds a token's tags.
const MaxTags = 16

// Keys looks up the signing secret for an app and key id. appKnown is
// false when the app does not exist; secret is nil when the app exists but
// the key id does not.
type Keys interface {
	TokenSecret(app, keyID string) (secret []byte, appKnown bool)
}

// Issue validates c and returns the signed token.
func Issue(c Claims, secret []byte) (string, error) {
	if len(secret) < MinSecretLen {
		return "", fmt.Errorf("issue token: secret is %d bytes, need at least %d", len(secret), MinSecretLen)
	}
	if err := c.validate(); err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	signed := prefix + base64.RawURLEncoding.EncodeToString(body)
	return signed + "." + base64.RawURLEncoding.EncodeToString(sign(secret, signed)), nil
}

// Parse checks the token's structure and returns its claims without
// verifying the signature. Only Verify's answer may be trusted.
func Parse(tok string) (Claims, error) {
	c, _, _, err := parse(tok)
	return c, err
}

// Verify checks tok for a connection that says it is device of app, at
// time now, and returns its claims.
func Verify(tok string, keys Keys, app, device string, now time.Time) (Claims, error) {
	c, signed, sig, err := parse(tok)
	if err != nil {
		return Claims{}, err
	}
	if c.App != app {
		return c, ErrWrongApp
	}
	secret, appKnown := keys.TokenSecret(c.App, c.KeyID)
	if !appKnown {
		return c, ErrUnknownApp
	}
	if secret == nil {
		return c, ErrUnknownKey
	}
	if !hmac.Equal(sig, sign(secret, signed)) {
		return c, ErrSignature
	}
	if c.Device != device {
		return c, ErrWrongDevice
	}
	t := now.Unix()
	leeway := int64(Leeway / time.Second)
	if c.NotBefore != 0 && t+leeway < c.NotBefore {
		return c, ErrNotYetValid
	}
	if t-leeway >= c.Expires {
		return c, ErrExpired
	}
	start := max(t, c.NotBefore)
	if c.Expires-start > int64(MaxLifetime/time.Second)+leeway {
		return c, ErrLifetime
	}
	return c, nil
}

func parse(tok string) (c Claims, signed string, sig []byte, err error) {
	if len(tok) > MaxLen || !strings.HasPrefix(tok, prefix) {
		return c, "", nil, ErrMalformed
	}
	dot := strings.LastIndexByte(tok, '.')
	if dot <= len(prefix) {
		return c, "", nil, ErrMalformed
	}
	signed = tok[:dot]
	body, err := base64.RawURLEncoding.Strict().DecodeString(tok[len(prefix):dot])
	if err != nil {
		return c, "", nil, ErrMalformed
	}
	sig, err = base64.RawURLEncoding.Strict().DecodeString(tok[dot+1:])
	if err != nil || len(sig) != sha256.Size {
		return c, "", nil, ErrMalformed
	}
	if err := c.decode(body); err != nil {
		return Claims{}, "", nil, ErrMalformed
	}
	if err := c.validate(); err != nil {
		return Claims{}, "", nil, ErrMalformed
	}
	return c, signed, sig, nil
}

// decode reads the claims JSON strictly: one object whose keys are claim
// names spelled exactly, each at most once, and nothing after it.
// encoding/json alone would match keys case-insensitively and let a
// repeated key overwrite the first, so two parsers could read the same
// signed token differently.
func (c *Claims) decode(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("claims are not a JSON object")
	}
	var seen uint8
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		var field any
		var bit uint8
		switch key {
		case "app":
			field, bit = &c.App, 1<<0
		case "dev":
			field, bit = &c.Device, 1<<1
		case "usr":
			field, bit = &c.User, 1<<2
		case "exp":
			field, bit = &c.Expires, 1<<3
		case "nbf":
			field, bit = &c.NotBefore, 1<<4
		case "kid":
			field, bit = &c.KeyID, 1<<5
		case "tags":
			field, bit = &c.Tags, 1<<6
		default:
			return fmt.Errorf("unknown claim %q", key)
		}
		if seen&bit != 0 {
			return fmt.Errorf("claim %q repeated", key)
		}
		seen |= bit
		if err := dec.Decode(field); err != nil {
			return fmt.Errorf("claim %q: %w", key, err)
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return errors.New("claims object not closed")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the claims object")
	}
	return nil
}

func (c *Claims) validate() error {
	switch {
	case !ValidID(c.App):
		return fmt.Errorf("%w: app id %q", ErrMalformed, c.App)
	case !ValidID(c.Device):
		return fmt.Errorf("%w: device id %q", ErrMalformed, c.Device)
	case c.User != "" && !ValidID(c.User):
		return fmt.Errorf("%w: user id %q", ErrMalformed, c.User)
	case !ValidID(c.KeyID):
		return fmt.Errorf("%w: key id %q", ErrMalformed, c.KeyID)
	case c.Expires <= 0:
		return fmt.Errorf("%w: no expiry", ErrMalformed)
	case c.NotBefore < 0 || (c.NotBefore != 0 && c.NotBefore >= c.Expires):
		return fmt.Errorf("%w: not-before must precede expiry", ErrMalformed)
	case len(c.Tags) > MaxTags:
		return fmt.Errorf("%w: %d tags, at most %d", ErrMalformed, len(c.Tags), MaxTags)
	}
	for i, t := range c.Tags {
		if !ValidID(t) {
			return fmt.Errorf("%w: tag %q", ErrMalformed, t)
		}
		if slices.Contains(c.Tags[:i], t) {
			return fmt.Errorf("%w: tag %q given twice", ErrMalformed, t)
		}
	}
	return nil
}

func sign(secret []byte, signed string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

// ValidID reports whether s is usable as an app, device, user, key or
// business id: 1–128 bytes of ASCII letters, digits and "._:-". The set is
// narrow so ids can be used in Redis keys, metrics and logs unescaped.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}
