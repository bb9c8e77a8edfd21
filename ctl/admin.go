package ctl

import (
	"github.com/pushd/pushd/appliance/api"

	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// What the admin commands share (status, nodes, app, degrade, the admin
// token subcommands of token, tunables, audit): their flags, the admin API
// client built from the settings, and errors that tell an operator what
// to do. Every admin command checks its arguments and flags before it
// builds the client, so a usage error never reaches the region.

// adminFlags returns a command's own flags followed by the admin settings
// and the output flags.
func adminFlags(own ...cli.Flag) []cli.Flag {
	return append(append(own, settingFlags(setAdminURL, setAdminToken)...), outputFlags()...)
}

// adminSetup resolves the output format and builds the admin API client.
func adminSetup(c *cli.Context, e *env) (*api.Client, format, error) {
	f, err := outputFormat(c)
	if err != nil {
		return nil, 0, err
	}
	k, err := loadConfig(c, e)
	if err != nil {
		return nil, 0, err
	}
	base, err := k.require(setAdminURL)
	if err != nil {
		return nil, 0, err
	}
	tc, err := k.tlsConfig()
	if err != nil {
		return nil, 0, err
	}
	// A missing token is left for the region to refuse: it answers 401
	// as for an unknown token, and adminFailed says where to set one.
	cl, err := api.NewClient(base, k.get(setAdminToken), httpClient(2, tc))
	if err != nil {
		return nil, 0, usagef("--%s: %v", setAdminURL.flag(), err)
	}
	// A request may be sent again for up to api's retry budget (20 s); say so rather
	// than hang silently.
	cl.OnRetry(func(r api.Retry) {
		same := ""
		if r.SameRequestID {
			same = " (same request id)"
		}
		fmt.Fprintf(e.stderr, "pushctl: %s %s: %s; sending it again in %s%s\n", r.Method, r.Path, r.Reason, r.Wait, same)
	})
	return cl, f, nil
}

// adminError is an admin API refusal explained for the operator; it wraps
// the *APIError.
type adminError struct {
	op, msg string
	err     error
}

func (e *adminError) Error() string { return e.op + ": " + e.msg }
func (e *adminError) Unwrap() error { return e.err }

// adminFailed describes a failed admin call. op names what the command
// tried ("app delete shop"). Refusals the operator can act on are said in
// words (the API's message carries the detail); anything else keeps the
// request, status and code.
func adminFailed(op string, err error) error {
	var ae *api.APIError
	if !errors.As(err, &ae) {
		return fmt.Errorf("%s: %w", op, err)
	}
	msg := ae.Message
	switch {
	case ae.Status == http.StatusUnauthorized:
		msg = "admin token missing or unknown (set --admin-token or PUSHD_ADMIN_TOKEN)"
	case ae.Status == http.StatusForbidden:
		msg = "forbidden: " + ae.Message
	case ae.AlreadyApplied():
		msg = "an earlier attempt of this request was applied, but its answer was lost on the way; " +
			"what it generated is not shown again: " + ae.Message
	case (ae.Status == http.StatusBadRequest || ae.Status == http.StatusNotFound || ae.Status == http.StatusConflict) && ae.Message != "":
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
	return &adminError{op: op, msg: msg, err: err}
}

// exactArgs returns the positional arguments when there is one for each
// name, else a usage error saying what is missing or extra.
func exactArgs(c *cli.Context, names ...string) ([]string, error) {
	a := c.Args().Slice()
	switch {
	case len(a) < len(names):
		return nil, usagef("missing %s", strings.Join(names[len(a):], " and "))
	case len(a) > len(names):
		return nil, usagef("unexpected arguments %q", a[len(names):])
	}
	return a, nil
}

// nonNegative checks int flags that count something (0 has a meaning of
// its own for each).
func nonNegative(c *cli.Context, names ...string) error {
	for _, n := range names {
		if c.Int(n) < 0 {
			return usagef("--%s %d: must be 0 or more", n, c.Int(n))
		}
	}
	return nil
}

// shownOnce tells the operator, on stderr so stdout stays the data, that
// the credentials just printed cannot be had again: reads never return
// them, and a retried request does not generate them twice.
func shownOnce(e *env, note string) {
	fmt.Fprintf(e.stderr, "pushctl: %s\n", note)
}

// writeApplied prints the answer to a write that returns nothing else:
// the API's JSON, or one line saying what changed.
func writeApplied(e *env, f format, res any, line string) error {
	if f == formatJSON {
		return writeJSON(e.stdout, res)
	}
	_, err := fmt.Fprintln(e.stdout, line)
	return err
}

// timeCell formats a time for a table: UTC, to the second.
func timeCell(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func listCell(ss []string) string { return strings.Join(ss, ",") }

func itoa(i int) string { return strconv.Itoa(i) }

func boolCell(b bool) string { return strconv.FormatBool(b) }
