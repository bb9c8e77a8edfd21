package ctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/regiontls"
)

func tlsIssueCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "issue",
		Usage: "make a key here and have the region CA certify it: for a node (--node) or a service such as Redis (--service)",
		Description: "The key never leaves this host; only a certificate request goes to the region. Files written to --out:\n" +
			"  --node ID:       node.pem (key and certificate, mode 0600) and ca.crt, ready for <data-dir>/tls of that node\n" +
			"  --service NAME:  NAME.key (mode 0600), NAME.crt and ca.crt, for Redis's tls-key-file, tls-cert-file and tls-ca-cert-file\n" +
			"Existing files are not overwritten.",
		Flags: adminFlags(
			&cli.StringFlag{Name: "node", Usage: "a node certificate for this node id"},
			&cli.StringFlag{Name: "service", Usage: "a service certificate with this name (no node may use it)"},
			&cli.StringSliceFlag{Name: "name", Usage: "a host name or IP address the certificate is for (repeatable; at least one)"},
			&cli.StringFlag{Name: "out", Usage: "directory to write the files to (created, mode 0700)", TakesFile: true},
			&cli.IntFlag{Name: "days", Usage: "validity in days (0: 365)"},
		),
		Action: func(c *cli.Context) error { return runTLSIssue(c, e) },
	}
}

// tlsIssued is the JSON output of tls issue.
type tlsIssued struct {
	api.Signed
	Files []string `json:"files"`
}

func runTLSIssue(c *cli.Context, e *env) error {
	if _, err := exactArgs(c); err != nil {
		return err
	}
	node, service, out := c.String("node"), c.String("service"), c.String("out")
	names := regiontls.ParseNames(c.StringSlice("name"))
	switch {
	case (node == "") == (service == ""):
		return usagef("give one of --node ID and --service NAME")
	case names.Empty():
		return usagef("give at least one --name: the host names or addresses the certificate is for")
	case out == "":
		return usagef("--out: the directory to write the key and certificate to")
	}
	if err := nonNegative(c, "days"); err != nil {
		return err
	}
	kind, cn := regiontls.KindNode, node
	files := []string{regiontls.NodeFile, regiontls.BundleFile}
	if service != "" {
		kind, cn = regiontls.KindService, service
		files = []string{service + ".key", service + ".crt", regiontls.BundleFile}
	}
	for _, name := range files {
		if _, err := os.Stat(filepath.Join(out, name)); !errors.Is(err, fs.ErrNotExist) {
			return usagef("%s exists already (or cannot be checked: %v); pick another --out", filepath.Join(out, name), err)
		}
	}
	cl, f, err := adminSetup(c, e)
	if err != nil {
		return err
	}
	key, err := regiontls.NewKey()
	if err != nil {
		return err
	}
	csr, err := regiontls.NewCSR(key, cn, names)
	if err != nil {
		return err
	}
	signed, err := cl.Sign(c.Context, &api.SignRequest{CSR: string(csr), Kind: string(kind), Days: c.Int("days")})
	if err != nil {
		return adminFailed("tls issue", err)
	}
	keyPEM, err := regiontls.EncodeKey(key)
	if err != nil {
		return err
	}
	write := map[string][]byte{regiontls.BundleFile: []byte(signed.CA)}
	if kind == regiontls.KindNode {
		nodePEM := append(keyPEM, signed.Certificate...)
		if _, err := regiontls.Check([]byte(signed.CA), nodePEM, node); err != nil {
			return fmt.Errorf("tls issue: the region answered a certificate that does not check out: %w", err)
		}
		write[regiontls.NodeFile] = nodePEM
	} else {
		write[service+".key"] = keyPEM
		write[service+".crt"] = []byte(signed.Certificate)
	}
	res := tlsIssued{Signed: *signed}
	for _, name := range files {
		perm := os.FileMode(0o644)
		if name == regiontls.NodeFile || name == service+".key" {
			perm = 0o600
		}
		if err := regiontls.WriteFile(out, name, write[name], perm); err != nil {
			return fmt.Errorf("tls issue: %w", err)
		}
		res.Files = append(res.Files, filepath.Join(out, name))
	}
	if f == formatJSON {
		return writeJSON(e.stdout, res)
	}
	t := newTable(e.stdout)
	t.row("kind", string(kind))
	t.row("name", cn)
	t.row("names", listCell(names.Strings()))
	t.row("serial", signed.Serial)
	t.row("not_after", timeCell(signed.NotAfter))
	t.row("issued_by", signed.IssuedBy)
	t.row("files", listCell(res.Files))
	return t.flush()
}
