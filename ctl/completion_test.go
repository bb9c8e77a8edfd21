package ctl

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// completeIn runs the completion script of shell (bash or zsh) in that
// shell for the words typed so far (the last being the word completed)
// and returns the candidates it offers. zsh's compadd and _files are
// stubbed to print what they are given: zsh filters by the prefix
// itself, so the candidates are all the words that may follow.
func completeIn(t *testing.T, shell, script string, dir string, words ...string) []string {
	t.Helper()
	bin, err := exec.LookPath(shell)
	if err != nil {
		t.Fatalf("%s is needed for its completion's test (./install.sh --dev-tools installs it): %v", shell, err)
	}
	path := filepath.Join(t.TempDir(), "completion."+shell)
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = "'" + w + "'"
	}
	var prog string
	switch shell {
	case "bash":
		prog = "source " + path + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" +
			itoa(len(words)-1) + "\n_pushctl\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
	case "zsh":
		prog = "compdef() { :; }\nsource " + path + "\ncompadd() { shift; printf '%s\\n' \"$@\"; }\n" +
			"_files() { print -l -- *; }\nwords=(" + strings.Join(quoted, " ") + ")\nCURRENT=" + itoa(len(words)) + "\n_pushctl\n"
	}
	cmd := exec.Command(bin, "-c", prog)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", shell, err, out)
	}
	return strings.Fields(string(out))
}

func TestCompletion_BashAndZsh(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, f := range []string{"fleet.txt", "payload.bin"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, shell := range []string{"bash", "zsh"} {
		script := harness{}.run(t, "completion", shell).expect(t, exitOK).stdout
		has := func(got []string, want ...string) {
			t.Helper()
			for _, w := range want {
				found := false
				for _, g := range got {
					found = found || g == w
				}
				if !found {
					t.Errorf("%s offers %v, not %s", shell, got, w)
				}
			}
		}
		only := func(got []string, want ...string) {
			t.Helper()
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("%s offers %v, want %v", shell, got, want)
			}
		}
		// bash filters by the word typed; zsh gets every candidate.
		cmds := completeIn(t, shell, script, dir, "pushctl", "")
		has(cmds, "push", "trace", "top", "nodes", "completion")
		if shell == "bash" {
			only(completeIn(t, shell, script, dir, "pushctl", "nodes", "d"), "drain")
			only(completeIn(t, shell, script, dir, "pushctl", "push", "--devices"), "--devices-file")
			only(completeIn(t, shell, script, dir, "pushctl", "--app", "dev", "tr"), "trace")
		} else {
			has(completeIn(t, shell, script, dir, "pushctl", "nodes", "d"), "drain", "restart-plan", "wait")
			has(completeIn(t, shell, script, dir, "pushctl", "push", "--devices"), "--devices-file", "--device", "--batch")
			has(completeIn(t, shell, script, dir, "pushctl", "--app", "dev", "tr"), "trace")
		}
		has(completeIn(t, shell, script, dir, "pushctl", "trace", "-"), "--output", "-o", "--json", "--admin-url", "--help")
		has(completeIn(t, shell, script, dir, "pushctl", "push", "--devices-file", ""), "fleet.txt", "payload.bin")
		if got := completeIn(t, shell, script, dir, "pushctl", "bench", ""); strings.Contains(strings.Join(got, " "), "worker") {
			t.Errorf("%s offers the internal bench worker: %v", shell, got)
		}
	}
}

func TestCompletion_UsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"completion"}, {"completion", "fish"}, {"completion", "bash", "zsh"}} {
		r := harness{}.run(t, args...).expect(t, exitUsage)
		if r.stdout != "" {
			t.Errorf("%q wrote %q", args, r.stdout)
		}
	}
}
