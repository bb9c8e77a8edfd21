// Package ctl is pushctl, the operator CLI of pushd: it mints device
// tokens, pushes messages and inspects devices through the push API,
// listens as a device, load-tests a node (bench connect, bench push), and
// administers a region through the admin API (status, nodes, app, degrade,
// admin tokens, tunables, audit, tls, the bridge to other regions).
//
// The simplest use is the pushctl binary, whose main is one line:
//
//	os.Exit(ctl.Main(os.Args, os.Stdin, os.Stdout, os.Stderr))
//
// Every command reads its settings from flags, then the environment, then
// a JSON config file (see config.go), prints data on stdout (an aligned
// table, or JSON with -o json / --json) and diagnostics on stderr, and
// exits 0 on success, 1 when an operation failed and 2 on a usage error.
//
// Client, the HTTP API client every command uses, is exported for the
// end-to-end tests in tests/; it is safe for concurrent use.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/ctl/load"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // an operation failed: network, server refusal, lost messages
	exitUsage   = 2 // the command line or the configuration is wrong
)

// Main runs pushctl with args (args[0] is the program name) and returns
// the process exit code. It stops long-running commands on SIGINT and
// SIGTERM.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, &env{
		stdin:         stdin,
		stdout:        stdout,
		stderr:        stderr,
		getenv:        os.Getenv,
		defaultConfig: defaultConfigPath,
	}, args)
}

// env is what a command may touch outside its flags. Main fills it from
// the process; tests fill it with buffers, a fake environment and
// in-process bench workers so they can run in parallel.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// defaultConfig is the config file used when neither --config nor
	// $PUSHCTL_CONFIG names one, if it exists.
	defaultConfig string
	// worker, when set, runs bench workers as goroutines with this
	// function instead of re-executing pushctl (tests cannot re-execute
	// the test binary as pushctl).
	worker load.WorkFunc
}

// run builds the command tree, runs it and maps its outcome to an exit
// code, printing the error on stderr.
func run(ctx context.Context, e *env, args []string) int {
	app := newApp(e)
	err := app.RunContext(ctx, flagsFirst(app, args))
	if err == nil {
		return exitOK
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(e.stderr, "pushctl: %s\n", ue.msg)
		if ue.cmd != "" {
			fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", ue.cmd)
		}
		return exitUsage
	}
	switch {
	case errors.Is(err, errReported):
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		fmt.Fprintln(e.stderr, "pushctl: interrupted")
	default:
		fmt.Fprintf(e.stderr, "pushctl: %s\n", err)
	}
	return exitFailure
}

// errReported is returned by a command that has already explained its
// failure on stderr and only needs the exit code.
var errReported = errors.New("failure already reported")

// usageError is a wrong command line or configuration: exit 2.
type usageError struct {
	msg string
	cmd string // help name of the command, for the "Run ... --help" hint
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// newApp builds a fresh command tree. urfave/cli flags carry parse state,
// so every run gets its own.
func newApp(e *env) *cli.App {
	app := &cli.App{
		Name:  "pushctl",
		Usage: "operate pushd: tokens, pushes, devices, load tests, and the region's administration",
		Description: "Settings come from flags, then the environment (PUSHD_*), then the config file\n" +
			"(--config, $PUSHCTL_CONFIG, or ./pushd-dev/pushctl.json written by 'pushd --dev').",
		Reader:    e.stdin,
		Writer:    e.stdout,
		ErrWriter: e.stderr,
		Flags:     append(settingFlags(allSettings()...), outputFlags()...),
		Commands: []*cli.Command{
			tokenCommand(e),
			listenCommand(e),
			pushCommand(e),
			deviceCommand(e),
			userCommand(e),
			groupCommand(e),
			benchCommand(e),
			bridgeCommand(e),
			statusCommand(e),
			topCommand(e),
			traceCommand(e),
			nodesCommand(e),
			appCommand(e),
			degradeCommand(e),
			tunablesCommand(e),
			auditCommand(e),
			completionCommand(e),
			tlsCommand(e),
		},
		// The default handler calls os.Exit for cli.ExitCoder errors;
		// Main owns the exit code instead.
		ExitErrHandler: func(*cli.Context, error) {},
		HideVersion:    true,
		Suggest:        true,
	}
	finishApp(app, e)
	return app
}

// finishApp applies what every command needs and urfave/cli does not do
// by default: usage errors that exit 2 instead of printing help on stdout,
// a per-run help flag (the library's shared HelpFlag is mutated by every
// run, which races when runs are concurrent), and group commands that
// refuse unknown subcommands.
func finishApp(app *cli.App, e *env) {
	app.HideHelp = true
	app.HideHelpCommand = true
	app.Flags = append(app.Flags, helpFlag())
	app.OnUsageError = onUsageError
	app.Action = groupAction(e, "pushctl")
	for _, c := range app.Commands {
		finishCommand(c, e, "pushctl "+c.Name)
	}
}

func finishCommand(c *cli.Command, e *env, helpName string) {
	c.HideHelp = true
	c.HideHelpCommand = true
	c.Flags = append(c.Flags, helpFlag())
	c.OnUsageError = onUsageError
	for _, s := range c.Subcommands {
		finishCommand(s, e, helpName+" "+s.Name)
	}
	if c.Action == nil {
		// A pure group: only its subcommands do something.
		c.Action = groupAction(e, helpName)
		return
	}
	// A leaf, or a command with an action of its own besides its
	// subcommands (degrade).
	action := c.Action
	c.Action = func(ctx *cli.Context) error {
		err := action(ctx)
		var ue *usageError
		if errors.As(err, &ue) && ue.cmd == "" {
			ue.cmd = helpName
		}
		return err
	}
}

func helpFlag() cli.Flag {
	return &cli.BoolFlag{Name: "help", Aliases: []string{"h"}, Usage: "show help"}
}

func onUsageError(c *cli.Context, err error, _ bool) error {
	return &usageError{msg: err.Error(), cmd: c.Command.HelpName}
}

// groupAction runs when a command that only holds subcommands is called
// without a known one: help goes to stderr and the exit code is 2.
func groupAction(e *env, helpName string) cli.ActionFunc {
	return func(c *cli.Context) error {
		help := func(w io.Writer) {
			if helpName == c.App.Name {
				cli.HelpPrinter(w, cli.AppHelpTemplate, c.App)
			} else {
				cli.HelpPrinter(w, cli.SubcommandHelpTemplate, c.Command)
			}
		}
		switch {
		case c.NArg() == 0:
			help(e.stderr)
			return &usageError{msg: "missing command", cmd: helpName}
		case c.Args().First() == "help":
			help(e.stdout)
			return nil
		}
		return &usageError{msg: fmt.Sprintf("unknown command %q", c.Args().First()), cmd: helpName}
	}
}

// flagsFirst moves a leaf command's flags in front of its positional
// arguments, so `pushctl device show D -o json` works as operators type it
// (kubectl style): urfave/cli v2 stops parsing flags at the first
// argument. Arguments after "--" stay positional.
func flagsFirst(app *cli.App, args []string) []string {
	if len(args) == 0 {
		return args
	}
	out := []string{args[0]}
	flags, cmds := app.Flags, app.Commands
	i := 1
	for i < len(args) {
		a := args[i]
		if isFlagArg(a) {
			n := 1 + flagValueArgs(flags, a, len(args)-i-1)
			out = append(out, args[i:i+n]...)
			i += n
			continue
		}
		var cmd *cli.Command
		for _, c := range cmds {
			if c.HasName(a) {
				cmd = c
			}
		}
		if cmd == nil {
			return args // an unknown command: let the parser report it
		}
		out = append(out, a)
		i++
		if len(cmd.Subcommands) == 0 {
			flags = cmd.Flags
			break
		}
		flags, cmds = cmd.Flags, cmd.Subcommands
	}
	var pos []string
	for i < len(args) {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case isFlagArg(a):
			n := 1 + flagValueArgs(flags, a, len(args)-i-1)
			out = append(out, args[i:i+n]...)
			i += n
		default:
			pos = append(pos, a)
			i++
		}
	}
	if len(pos) == 0 {
		return out
	}
	return append(append(out, "--"), pos...)
}

func isFlagArg(a string) bool { return len(a) > 1 && a[0] == '-' && a != "--" }

// flagValueArgs is how many of the following arguments a flag consumes: one
// for a flag that takes a value given as a separate argument, else none.
func flagValueArgs(flags []cli.Flag, a string, left int) int {
	name := strings.TrimLeft(a, "-")
	if strings.Contains(name, "=") || left == 0 {
		return 0
	}
	for _, f := range flags {
		if !defines([]cli.Flag{f}, name) {
			continue
		}
		if _, isBool := f.(*cli.BoolFlag); isBool {
			return 0
		}
		return 1
	}
	return 0
}
