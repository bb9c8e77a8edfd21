package ctl

import (
	"fmt"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/token"
)

// tokenCommand groups the token subcommands: device tokens minted here,
// and the region's admin tokens.
func tokenCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "device tokens (minted locally) and admin API tokens",
		Subcommands: []*cli.Command{
			tokenIssueCommand(e),
			tokenCreateAdminCommand(e),
			tokenRevokeAdminCommand(e),
			tokenListAdminCommand(e),
		},
	}
}

func tokenIssueCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "issue",
		Usage: "mint a device token locally with the app's secret",
		Description: "The token is signed here, with the secret from --secret-base64 / $PUSHD_SECRET_BASE64 /\n" +
			"the config file; no server is contacted. Its lifetime may not exceed 24h, as servers refuse longer ones.",
		Flags: append(append([]cli.Flag{
			&cli.StringFlag{Name: "device", Usage: "device id (required)"},
			&cli.StringFlag{Name: "user", Usage: "user id to bind the token to"},
			&cli.StringSliceFlag{Name: "tag", Usage: "a tag for broadcast and group filters (repeatable, at most 16)"},
			&cli.DurationFlag{Name: "ttl", Usage: "lifetime, at most 24h", Value: time.Hour},
			&cli.StringFlag{Name: "not-before", Usage: "valid from TIME (RFC 3339 or unix seconds); the ttl counts from it"},
		}, settingFlags(setApp, setKeyID, setSecret)...), outputFlags()...),
		Action: func(c *cli.Context) error { return runTokenIssue(c, e) },
	}
}

// tokenIssued is the JSON output of token issue.
type tokenIssued struct {
	Token     string   `json:"token"`
	App       string   `json:"app"`
	Device    string   `json:"device"`
	User      string   `json:"user,omitempty"`
	Tags      []string `json:"tags,omitempty"`
	Expires   string   `json:"expires"`
	NotBefore string   `json:"not_before,omitempty"`
}

func runTokenIssue(c *cli.Context, e *env) error {
	format, err := outputFormat(c)
	if err != nil {
		return err
	}
	if c.NArg() > 0 {
		return usagef("unexpected arguments %q", c.Args().Slice())
	}
	k, err := loadConfig(c, e)
	if err != nil {
		return err
	}
	device := c.String("device")
	if device == "" {
		return usagef("missing --device")
	}
	ttl := c.Duration("ttl")
	if ttl <= 0 || ttl > token.MaxLifetime {
		return usagef("--ttl %s: must be more than 0 and at most %s (servers refuse longer tokens)", ttl, token.MaxLifetime)
	}
	app, err := k.require(setApp)
	if err != nil {
		return err
	}
	keyID, err := k.require(setKeyID)
	if err != nil {
		return err
	}
	secret, err := k.secret()
	if err != nil {
		return err
	}
	claims := token.Claims{App: app, Device: device, User: c.String("user"), Tags: c.StringSlice("tag"), KeyID: keyID}
	start := time.Now()
	if s := c.String("not-before"); s != "" {
		nbf, err := parseTime(s)
		if err != nil {
			return usagef("--not-before %q: %v", s, err)
		}
		claims.NotBefore = nbf.Unix()
		start = nbf
	}
	claims.Expires = start.Add(ttl).Unix()
	tok, err := token.Issue(claims, secret)
	if err != nil {
		// Issue refuses only bad input: ids, a short secret.
		return usagef("%v", err)
	}
	out := tokenIssued{Token: tok, App: app, Device: device, User: claims.User, Tags: claims.Tags,
		Expires: time.Unix(claims.Expires, 0).UTC().Format(time.RFC3339)}
	if claims.NotBefore != 0 {
		out.NotBefore = time.Unix(claims.NotBefore, 0).UTC().Format(time.RFC3339)
	}
	if format == formatJSON {
		return writeJSON(e.stdout, out)
	}
	_, err = fmt.Fprintln(e.stdout, tok)
	return err
}

// parseTime accepts RFC 3339 or unix seconds.
func parseTime(s string) (time.Time, error) {
	if secs, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(secs, 0), nil
	}
	return time.Parse(time.RFC3339, s)
}

// mintFunc returns a function that issues a fresh token of claims,
// valid for an hour: long-running commands call it before every connect,
// so a reconnect never presents an expired token.
func mintFunc(claims token.Claims, secret []byte) func() (string, error) {
	return func() (string, error) {
		claims.Expires = time.Now().Add(time.Hour).Unix()
		return token.Issue(claims, secret)
	}
}
