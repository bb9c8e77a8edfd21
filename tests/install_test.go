package tests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hostRepo is a copy of what install.sh --host installs from: the
// script, systemd/, docs/ and the binaries the tests built (the copy's
// bin/), so nothing the test does touches the checkout.
func hostRepo(t *testing.T) string {
	t.Helper()
	repo := t.TempDir()
	copyFile := func(src, dst string, mode os.FileMode) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, mode); err != nil {
			t.Fatal(err)
		}
	}
	copyFile("../install.sh", filepath.Join(repo, "install.sh"), 0o755)
	for _, dir := range []string{"systemd", "docs"} {
		entries, err := os.ReadDir(filepath.Join("..", dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !e.IsDir() {
				copyFile(filepath.Join("..", dir, e.Name()), filepath.Join(repo, dir, e.Name()), 0o644)
			}
		}
	}
	copyFile(filepath.Join(bin, "pushd"), filepath.Join(repo, "bin", "pushd"), 0o755)
	copyFile(filepath.Join(bin, "pushctl"), filepath.Join(repo, "bin", "pushctl"), 0o755)
	return repo
}

// pathWithoutGo is PATH without the directories that hold go: a region
// host without Go installs the ./bin it was given.
func pathWithoutGo() string {
	var keep []string
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if _, err := os.Stat(filepath.Join(d, "go")); err != nil {
			keep = append(keep, d)
		}
	}
	return strings.Join(keep, string(os.PathListSeparator))
}

// runInstall runs the copy's install.sh with args and DESTDIR=dest and
// returns its exit code, stdout and stderr.
func runInstall(t *testing.T, repo, dest string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(repo, "install.sh")}, args...)...)
	cmd.Env = []string{"PATH=" + pathWithoutGo(), "HOME=" + t.TempDir(), "DESTDIR=" + dest}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errOut.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), out.String(), errOut.String()
	}
	t.Fatalf("install.sh: %v", err)
	return 0, "", ""
}

// tree lists every file and directory under root with its mode, owner
// and, for files, size and modification time.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		rel := strings.TrimPrefix(p, root)
		desc := fmt.Sprintf("%04o %d:%d", info.Mode().Perm(), st.Uid, st.Gid)
		if !d.IsDir() {
			desc += fmt.Sprintf(" %d %d", info.Size(), info.ModTime().UnixNano())
		}
		if rel != "" {
			out[rel] = desc
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestInstall_HostIntoDESTDIR installs a region host into a DESTDIR as a
// package build would: every file in its place with its mode, the unit
// passing systemd-analyze verify, the owners the sysusers and tmpfiles
// files declare applied by systemd's own tools; a second run changes
// nothing and says so; --uninstall keeps the data unless --purge.
func TestInstall_HostIntoDESTDIR(t *testing.T) {
	t.Parallel()
	repo := hostRepo(t)
	dest := t.TempDir()
	code, stdout, stderr := runInstall(t, repo, dest, "--host")
	if code != 0 {
		t.Fatalf("install.sh --host: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"no Go on this host: installing ./bin/pushd and ./bin/pushctl as they are",
		"installed /usr/local/bin/pushd", "installed /etc/systemd/system/pushd.service", "created /etc/pushd",
		"installed /etc/pushd/pushd.json", "staged under " + dest + ": no user created", "\nnext:\n",
		`on the region's first host only, set "bootstrap": true`, "sudo systemctl start pushd && sudo cat /var/lib/pushd/admin-token"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	uid, gid := os.Getuid(), os.Getgid()
	files := tree(t, dest)
	for path, mode := range map[string]string{
		"/usr/local/bin/pushd":                                 "0755",
		"/usr/local/bin/pushctl":                               "0755",
		"/etc/systemd/system/pushd.service":                    "0644",
		"/etc/sysctl.d/90-pushd.conf":                          "0644",
		"/etc/sysusers.d/pushd.conf":                           "0644",
		"/etc/tmpfiles.d/pushd.conf":                           "0644",
		"/etc/redis/redis-pushd.conf":                          "0644",
		"/usr/local/share/doc/pushd/operations.md":             "0644",
		"/usr/local/share/bash-completion/completions/pushctl": "0644",
		"/usr/local/share/zsh/vendor-completions/_pushctl":     "0644",
		"/etc/pushd":            "0700",
		"/etc/pushd/pushd.json": "0600",
		"/var/lib/pushd":        "0700",
	} {
		got, ok := files[path]
		if want := fmt.Sprintf("%s %d:%d", mode, uid, gid); !ok || !strings.HasPrefix(got, want) {
			t.Errorf("%s: %q, want %s (staged files belong to the installer)", path, got, want)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "etc/systemd/system/pushd.service"))
	for _, want := range []string{"ExecStart=/usr/local/bin/pushd --config /etc/pushd/pushd.json",
		"Documentation=file:///usr/local/share/doc/pushd/operations.md", "Type=notify", "TimeoutStopSec=30s"} {
		if !strings.Contains(string(unit), want+"\n") {
			t.Errorf("unit lacks %q", want)
		}
	}
	conf, _ := os.ReadFile(filepath.Join(dest, "etc/pushd/pushd.json"))
	host, _ := os.Hostname()
	if !strings.Contains(string(conf), `"node-id": "`+strings.Split(host, ".")[0]+`"`) {
		t.Errorf("the config is not named after the host:\n%s", conf)
	}
	// The config names Redis's password file, which the operator copies
	// from the Redis host (operations.md): a stand-in takes its place.
	password := filepath.Join(t.TempDir(), "redis-password")
	if err := os.WriteFile(password, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(dest, "usr/local/bin/pushd"), "--config", filepath.Join(dest, "etc/pushd/pushd.json"),
		"--redis-password-file", password, "--check-config").CombinedOutput(); err != nil {
		t.Errorf("the installed config: %v\n%s", err, out)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is needed to verify the unit (./install.sh --dev-tools installs the systemd package): %v", err)
	}
	// The unit reloads with the host's /bin/kill (procps), which the
	// staging root lacks: systemd-analyze looks for it under --root.
	if err := os.MkdirAll(filepath.Join(dest, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if kill, err := os.ReadFile("/bin/kill"); err != nil {
		t.Fatalf("/bin/kill (procps) is needed to verify the unit's ExecReload: %v", err)
	} else if err := os.WriteFile(filepath.Join(dest, "bin/kill"), kill, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", "--recursive-errors=no", "--man=no", "--root="+dest,
		"/etc/systemd/system/pushd.service").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	if err := os.RemoveAll(filepath.Join(dest, "bin")); err != nil {
		t.Fatal(err)
	}

	// Again: nothing changes, and it says so.
	code, stdout, stderr = runInstall(t, repo, dest, "--host")
	if code != 0 || !strings.Contains(stdout, "nothing changed: this host already has what this checkout installs") ||
		strings.Contains(stdout, "installed ") || strings.Contains(stdout, "updated ") || strings.Contains(stdout, "created ") {
		t.Fatalf("second run: exit %d\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "next: restart pushd on this host to run what was installed: sudo systemctl restart pushd") {
		t.Errorf("second run's next step:\n%s", stdout)
	}
	again := tree(t, dest)
	for path, desc := range files {
		if again[path] != desc {
			t.Errorf("%s changed on the second run: %s, then %s", path, desc, again[path])
		}
	}
	if len(again) != len(files) {
		t.Errorf("%d paths after the second run, %d after the first", len(again), len(files))
	}

	// The owners the package's postinst applies, through systemd's tools
	// on the staged tree.
	if os.Geteuid() == 0 {
		for _, tool := range [][]string{{"systemd-sysusers", "--root=" + dest}, {"systemd-tmpfiles", "--root=" + dest, "--create"}} {
			if out, err := exec.Command(tool[0], tool[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", tool[0], err, out)
			}
		}
		pushdUID, pushdGID := userOf(t, filepath.Join(dest, "etc/passwd"), "pushd")
		owned := tree(t, dest)
		for path, mode := range map[string]string{"/etc/pushd": "0700", "/etc/pushd/pushd.json": "0600", "/var/lib/pushd": "0700"} {
			if want := fmt.Sprintf("%s %d:%d", mode, pushdUID, pushdGID); !strings.HasPrefix(owned[path], want) {
				t.Errorf("%s after sysusers and tmpfiles: %q, want %s", path, owned[path], want)
			}
		}
	} else {
		t.Log("not root: the owners the sysusers and tmpfiles files declare were not applied")
	}

	// A node's data is kept on uninstall unless purged.
	if err := os.WriteFile(filepath.Join(dest, "var/lib/pushd/admin-token"), []byte("pa_x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runInstall(t, repo, dest, "--uninstall")
	if code != 0 || !strings.Contains(stdout, "removed /usr/local/bin/pushd") || !strings.Contains(stdout, "kept /etc/pushd, /var/lib/pushd") {
		t.Fatalf("uninstall: exit %d\n%s%s", code, stdout, stderr)
	}
	left := tree(t, dest)
	for _, path := range []string{"/usr/local/bin/pushd", "/etc/systemd/system/pushd.service", "/etc/redis/redis-pushd.conf", "/usr/local/share/doc/pushd"} {
		if _, ok := left[path]; ok {
			t.Errorf("%s left after --uninstall", path)
		}
	}
	for _, path := range []string{"/etc/pushd/pushd.json", "/var/lib/pushd/admin-token"} {
		if _, ok := left[path]; !ok {
			t.Errorf("%s removed by --uninstall without --purge", path)
		}
	}
	code, stdout, _ = runInstall(t, repo, dest, "--uninstall", "--purge")
	if code != 0 || !strings.Contains(stdout, "removed /etc/pushd\n") || !strings.Contains(stdout, "removed /var/lib/pushd\n") {
		t.Fatalf("purge: exit %d\n%s", code, stdout)
	}
	if code, stdout, _ = runInstall(t, repo, dest, "--uninstall"); code != 0 || !strings.Contains(stdout, "nothing changed: pushd is not installed here") {
		t.Fatalf("uninstall again: exit %d\n%s", code, stdout)
	}
}

// TestInstall_PrefixUsrIsAPackageLayout: --prefix /usr puts the binaries
// in /usr/bin and the systemd files in /usr/lib, and the unit names them.
func TestInstall_PrefixUsrIsAPackageLayout(t *testing.T) {
	t.Parallel()
	repo := hostRepo(t)
	dest := t.TempDir()
	if code, stdout, stderr := runInstall(t, repo, dest, "--host", "--prefix", "/usr"); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	files := tree(t, dest)
	for _, path := range []string{"/usr/bin/pushd", "/usr/lib/systemd/system/pushd.service", "/usr/lib/sysctl.d/90-pushd.conf",
		"/usr/lib/sysusers.d/pushd.conf", "/usr/lib/tmpfiles.d/pushd.conf", "/usr/share/doc/pushd/operations.md", "/etc/pushd/pushd.json"} {
		if _, ok := files[path]; !ok {
			t.Errorf("%s not installed", path)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/pushd.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/pushd --config") || !strings.Contains(string(unit), "Documentation=file:///usr/share/doc/pushd/operations.md") {
		t.Fatalf("unit:\n%s", unit)
	}
}

// TestInstall_UsageErrors: bad arguments exit 2 and install nothing.
func TestInstall_UsageErrors(t *testing.T) {
	t.Parallel()
	repo := hostRepo(t)
	dest := t.TempDir()
	for _, args := range [][]string{{"--frobnicate"}, {"--host", "--uninstall"}, {"--purge"}, {"--host", "--purge"},
		{"--host", "--prefix"}, {"--host", "--prefix", "usr"}, {"--prefix", "/opt"}, {"--host", "--dev-tools"}} {
		code, stdout, stderr := runInstall(t, repo, dest, args...)
		if code != 2 || !strings.HasPrefix(stderr, "install.sh: ") || !strings.Contains(stderr, "Run './install.sh --help' for usage.") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 with the reason", args, code, stdout, stderr)
		}
	}
	if files := tree(t, dest); len(files) != 0 {
		t.Fatalf("usage errors installed %v", files)
	}
	code, stdout, _ := runInstall(t, repo, dest, "--help")
	if code != 0 || !strings.Contains(stdout, "sudo ./install.sh --host [--prefix DIR]") {
		t.Fatalf("--help: exit %d\n%s", code, stdout)
	}
}

// userOf reads a user's uid and gid from a passwd file.
func userOf(t *testing.T, passwd, name string) (int, int) {
	t.Helper()
	f, err := os.Open(passwd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) > 3 && fields[0] == name {
			uid, _ := strconv.Atoi(fields[2])
			gid, _ := strconv.Atoi(fields[3])
			return uid, gid
		}
	}
	t.Fatalf("no user %s in %s", name, passwd)
	return 0, 0
}
