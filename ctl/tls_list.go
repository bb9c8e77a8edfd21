package ctl

import (
	"errors"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/api"
)

func tlsListCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:   "list",
		Usage:  "list each node's certificate: serial, expiry, names, and whether it keeps the CA key",
		Flags:  adminFlags(),
		Action: func(c *cli.Context) error { return runTLSList(c, e) },
	}
}

// tlsListed is one node in the JSON output of tls list; Certificate is
// nil for a node that did not answer.
type tlsListed struct {
	Node        string               `json:"node"`
	Alive       bool                 `json:"alive"`
	Certificate *api.CertificateInfo `json:"certificate"`
}

func runTLSList(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	st, err := cl.Status(c.Context)
	if err != nil {
		return adminFailed("tls list", err)
	}
	out := make([]tlsListed, 0, len(st.Nodes))
	withTLS := false
	for _, n := range st.Nodes {
		out = append(out, tlsListed{Node: n.ID, Alive: n.Alive, Certificate: n.Certificate})
		withTLS = withTLS || n.Certificate != nil
	}
	if !withTLS {
		return errors.New("tls list: no node reports a certificate: the region runs without TLS (pushd --dev, or --insecure-plaintext)")
	}
	if f == formatJSON {
		return writeJSON(e.stdout, out)
	}
	t := newTable(e.stdout, "NODE", "SERIAL", "NOT_AFTER", "DAYS_LEFT", "CA_KEY", "NAMES")
	for _, n := range out {
		if n.Certificate == nil {
			t.row(n.Node, "", "", "", "", "(did not answer)")
			continue
		}
		ci := n.Certificate
		days := strconv.Itoa(int(time.Until(ci.NotAfter).Hours() / 24))
		t.row(n.Node, ci.Serial, timeCell(ci.NotAfter), days, boolCell(ci.CAKey), listCell(ci.Names))
	}
	return t.flush()
}
