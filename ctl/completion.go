package ctl

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

func completionCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print the shell completion script for bash or zsh",
		ArgsUsage: "bash|zsh",
		Description: "Completes commands, subcommands and flags, and file names after flags that take a file.\n" +
			"  bash: source <(pushctl completion bash)   (or save it as /etc/bash_completion.d/pushctl)\n" +
			"  zsh:  source <(pushctl completion zsh)    (or save it as _pushctl in a directory of $fpath)",
		Action: func(c *cli.Context) error { return runCompletion(c, e) },
	}
}

func runCompletion(c *cli.Context, e *env) error {
	a, err := exactArgs(c, "SHELL")
	if err != nil {
		return err
	}
	tree, files := completionTree(newApp(e))
	switch a[0] {
	case "bash":
		return writeBashCompletion(e.stdout, tree, files)
	case "zsh":
		return writeZshCompletion(e.stdout, tree, files)
	}
	return usagef("shell %q: want bash or zsh", a[0])
}

// completionNode is what can follow one command path.
type completionNode struct {
	path  string   // "" for pushctl itself, else "nodes drain"
	cmds  []string // subcommands
	flags []string // --long and -short names
}

// completionTree lists every command path of app with its subcommands
// and flags, and the flags that take a file.
func completionTree(app *cli.App) (nodes []completionNode, fileFlags []string) {
	addFlags := func(fs []cli.Flag) []string {
		var out []string
		for _, f := range fs {
			for _, name := range f.Names() {
				dash := "--"
				if len(name) == 1 {
					dash = "-"
				}
				out = append(out, dash+name)
			}
			if sf, ok := f.(*cli.StringFlag); ok && sf.TakesFile {
				fileFlags = append(fileFlags, "--"+sf.Name)
			}
		}
		return out
	}
	var walk func(path string, cmds []*cli.Command, flags []cli.Flag)
	walk = func(path string, cmds []*cli.Command, flags []cli.Flag) {
		n := completionNode{path: path, flags: addFlags(flags)}
		for _, c := range cmds {
			if c.Hidden {
				continue
			}
			n.cmds = append(n.cmds, c.Name)
		}
		nodes = append(nodes, n)
		for _, c := range cmds {
			if c.Hidden {
				continue
			}
			sub := c.Name
			if path != "" {
				sub = path + " " + c.Name
			}
			walk(sub, c.Subcommands, c.Flags)
		}
	}
	walk("", app.Commands, app.Flags)
	slices.Sort(fileFlags)
	return nodes, slices.Compact(fileFlags)
}

// completionCases writes a shell case statement mapping each path to
// words.
func completionCases(w io.Writer, nodes []completionNode, words func(completionNode) []string) {
	fmt.Fprintln(w, `  case "$1" in`)
	for _, n := range nodes {
		fmt.Fprintf(w, "    '%s') echo '%s' ;;\n", n.path, strings.Join(words(n), " "))
	}
	fmt.Fprintln(w, "  esac")
}

func writeBashCompletion(w io.Writer, tree []completionNode, fileFlags []string) error {
	fmt.Fprintln(w, "# bash completion for pushctl: source <(pushctl completion bash),")
	fmt.Fprintln(w, "# or save it as /etc/bash_completion.d/pushctl.")
	fmt.Fprintln(w, "_pushctl_cmds() {")
	completionCases(w, tree, func(n completionNode) []string { return n.cmds })
	fmt.Fprintln(w, "}")
	fmt.Fprintln(w, "_pushctl_flags() {")
	completionCases(w, tree, func(n completionNode) []string { return n.flags })
	fmt.Fprintln(w, "}")
	_, err := fmt.Fprintf(w, `_pushctl() {
  local cur prev path w i
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  path=
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=${COMP_WORDS[i]}
    case " $(_pushctl_cmds "$path") " in
      *" $w "*) path=${path:+$path }$w ;;
    esac
  done
  case $prev in
    %s) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(_pushctl_flags "$path")" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$(_pushctl_cmds "$path")" -- "$cur"))
  fi
}
complete -F _pushctl pushctl
`, strings.Join(fileFlags, "|"))
	return err
}

func writeZshCompletion(w io.Writer, tree []completionNode, fileFlags []string) error {
	fmt.Fprintln(w, "#compdef pushctl")
	fmt.Fprintln(w, "# zsh completion for pushctl: source <(pushctl completion zsh),")
	fmt.Fprintln(w, "# or save it as _pushctl in a directory of $fpath.")
	fmt.Fprintln(w, "_pushctl_cmds() {")
	completionCases(w, tree, func(n completionNode) []string { return n.cmds })
	fmt.Fprintln(w, "}")
	fmt.Fprintln(w, "_pushctl_flags() {")
	completionCases(w, tree, func(n completionNode) []string { return n.flags })
	fmt.Fprintln(w, "}")
	_, err := fmt.Fprintf(w, `_pushctl() {
  local p= w i
  for ((i = 2; i < CURRENT; i++)); do
    w=${words[i]}
    if [[ " $(_pushctl_cmds "$p") " == *" $w "* ]]; then p=${p:+$p }$w; fi
  done
  case ${words[CURRENT-1]} in
    %s) _files; return ;;
  esac
  if [[ ${words[CURRENT]} == -* ]]; then
    compadd -- ${=$(_pushctl_flags "$p")}
  else
    compadd -- ${=$(_pushctl_cmds "$p")}
  fi
}
if [[ "$funcstack[1]" == _pushctl ]]; then _pushctl "$@"; else compdef _pushctl pushctl; fi
`, strings.Join(fileFlags, "|"))
	return err
}
