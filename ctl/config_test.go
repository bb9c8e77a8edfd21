package ctl

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/token"
)

func writeConfig(t *testing.T, cfg fileConfig) string {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "pushctl.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func issuedApp(t *testing.T, r result) string {
	t.Helper()
	out := decodeJSON[tokenIssued](t, r)
	c, err := token.Parse(out.Token)
	if err != nil {
		t.Fatal(err)
	}
	return c.App + "/" + c.KeyID
}

// TestConfig_FlagsOverEnvOverFile resolves the app and key id through all
// three layers.
func TestConfig_FlagsOverEnvOverFile(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, fileConfig{App: "from-file", KeyID: "kf", SecretBase64: base64.StdEncoding.EncodeToString(testSecret)})
	args := []string{"token", "issue", "--device", "d", "-o", "json", "--config", path}

	if got := issuedApp(t, harness{}.run(t, args...).expect(t, exitOK)); got != "from-file/kf" {
		t.Errorf("file only: %s", got)
	}
	h := harness{env: map[string]string{"PUSHD_APP": "from-env"}}
	if got := issuedApp(t, h.run(t, args...).expect(t, exitOK)); got != "from-env/kf" {
		t.Errorf("env over file: %s", got)
	}
	if got := issuedApp(t, h.run(t, append(args, "--app", "from-flag")...).expect(t, exitOK)); got != "from-flag/kf" {
		t.Errorf("flag over env: %s", got)
	}
	// A flag given at the root level counts too; the innermost wins.
	if got := issuedApp(t, h.run(t, append([]string{"--app", "root", "--key-id", "kr"}, args...)...).expect(t, exitOK)); got != "root/kr" {
		t.Errorf("root flag: %s", got)
	}
	if got := issuedApp(t, h.run(t, append([]string{"--app", "root"}, append(args, "--app", "leaf")...)...).expect(t, exitOK)); got != "leaf/kf" {
		t.Errorf("leaf over root: %s", got)
	}
}

func TestConfig_FileFromEnvAndDevDefault(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, fileConfig{App: "a", KeyID: "k", SecretBase64: base64.StdEncoding.EncodeToString(testSecret)})
	args := []string{"token", "issue", "--device", "d", "-o", "json"}
	if got := issuedApp(t, harness{env: map[string]string{"PUSHCTL_CONFIG": path}}.run(t, args...).expect(t, exitOK)); got != "a/k" {
		t.Errorf("$PUSHCTL_CONFIG: %s", got)
	}
	if got := issuedApp(t, harness{defaultConfig: path}.run(t, args...).expect(t, exitOK)); got != "a/k" {
		t.Errorf("dev default: %s", got)
	}
	// A missing dev default is no error, just no settings.
	r := harness{defaultConfig: filepath.Join(t.TempDir(), "absent.json")}.run(t, args...).expect(t, exitUsage)
	if err := contains(r.stderr, "missing app: set --app or $PUSHD_APP"); err != nil {
		t.Error(err)
	}
}

func TestConfig_Errors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nope.json")
	r := harness{}.run(t, "token", "issue", "--device", "d", "--config", missing).expect(t, exitFailure)
	if err := contains(r.stderr, "read config"); err != nil {
		t.Error(err)
	}
	r = harness{env: map[string]string{"PUSHCTL_CONFIG": missing}}.run(t, "token", "issue", "--device", "d").expect(t, exitFailure)
	if err := contains(r.stderr, "nope.json"); err != nil {
		t.Error(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = harness{}.run(t, "token", "issue", "--device", "d", "--config", bad).expect(t, exitUsage)
	if err := contains(r.stderr, "bad.json"); err != nil {
		t.Error(err)
	}
	// A missing setting names the flag, the variable and the file key.
	path := writeConfig(t, fileConfig{App: "a"})
	r = harness{}.run(t, "token", "issue", "--device", "d", "--config", path).expect(t, exitUsage)
	if err := contains(r.stderr, `missing key-id: set --key-id or $PUSHD_KEY_ID (or "key_id" in config file `+path+")"); err != nil {
		t.Error(err)
	}
}

// TestConfig_UnknownFieldsIgnored: newer servers may write more fields.
func TestConfig_UnknownFieldsIgnored(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "c.json")
	body := `{"app":"a","key_id":"k","secret_base64":"` + base64.StdEncoding.EncodeToString(testSecret) + `","region":"bj","pid":1}`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	r := harness{}.run(t, "token", "issue", "--device", "d", "--config", p, "--ttl", time.Minute.String()).expect(t, exitOK)
	if _, err := token.Parse(r.stdout[:len(r.stdout)-1]); err != nil {
		t.Fatal(err)
	}
}
