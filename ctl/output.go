package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// Output flags: -o table|json, and --json as a synonym for -o json.
const (
	flagOutput = "output"
	flagJSON   = "json"
)

type format int

const (
	formatTable format = iota
	formatJSON
)

// outputFlags returns fresh output flags. Commands define them and so does
// the root, so `-o json` works before or after the command name.
func outputFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagOutput, Aliases: []string{"o"}, Usage: "output format: table or json", Value: "table"},
		&cli.BoolFlag{Name: flagJSON, Usage: "same as -o json"},
	}
}

// outputFormat resolves the output flags, innermost command first.
func outputFormat(c *cli.Context) (format, error) {
	for _, ctx := range c.Lineage() {
		if ctx.Command == nil {
			continue
		}
		if defines(ctx.Command.Flags, flagJSON) && ctx.IsSet(flagJSON) && ctx.Bool(flagJSON) {
			return formatJSON, nil
		}
		if defines(ctx.Command.Flags, flagOutput) && ctx.IsSet(flagOutput) {
			switch v := ctx.String(flagOutput); v {
			case "table":
				return formatTable, nil
			case "json":
				return formatJSON, nil
			default:
				return 0, usagef("-o %q: want table or json", v)
			}
		}
	}
	return formatTable, nil
}

// writeJSON prints v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table writes rows as aligned columns. Empty cells print as "-" so
// columns stay parseable by awk.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }
