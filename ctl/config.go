package ctl

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/pushd/pushd/ctl/load"
)

// Config file lookup. A file named by --config or $PUSHCTL_CONFIG must
// exist; the development file written by `pushd --dev` is used only when
// it is there.
const (
	defaultConfigPath = "pushd-dev/pushctl.json"
	envConfig         = "PUSHCTL_CONFIG"
	flagConfig        = "config"
	maxConfigBytes    = 1 << 20
)

// fileConfig is the JSON config file. `pushd --dev` writes it with the
// addresses it bound and the dev app's credentials; operators write their
// own. Unknown fields are ignored so newer servers can add some.
type fileConfig struct {
	PushURL      string `json:"push_url"`
	WSURL        string `json:"ws_url"`
	TCPURL       string `json:"tcp_url"`
	AdminURL     string `json:"admin_url"`
	App          string `json:"app"`
	KeyID        string `json:"key_id"`
	SecretBase64 string `json:"secret_base64"`
	APIKey       string `json:"api_key"`
	AdminToken   string `json:"admin_token"`
	CAFile       string `json:"ca_file"`
	Region       string `json:"region"`
	PID          int    `json:"pid"`
}

// setting is one value resolved from a flag, the environment or the config
// file, in that order. Its value is the flag name; the environment
// variable is derived from it (PUSHD_ and the name in upper snake case).
type setting string

const (
	setPushURL    setting = "push-url"
	setURL        setting = "url"
	setApp        setting = "app"
	setAPIKey     setting = "api-key"
	setKeyID      setting = "key-id"
	setSecret     setting = "secret-base64"
	setAdminURL   setting = "admin-url"
	setAdminToken setting = "admin-token"
	setCAFile     setting = "ca-file"
)

func allSettings() []setting {
	return []setting{setPushURL, setURL, setApp, setAPIKey, setKeyID, setSecret, setAdminURL, setAdminToken, setCAFile}
}

func (s setting) flag() string { return string(s) }

func (s setting) env() string {
	return "PUSHD_" + strings.ToUpper(strings.ReplaceAll(string(s), "-", "_"))
}

// fileKey names the setting's field in the config file.
func (s setting) fileKey() string {
	switch s {
	case setURL:
		return "ws_url"
	case setCAFile:
		return "ca_file"
	}
	return strings.ReplaceAll(string(s), "-", "_")
}

func (s setting) usage() string {
	switch s {
	case setPushURL:
		return "push API base URL, e.g. http://127.0.0.1:8090"
	case setURL:
		return "device URL: ws://host:port/v1/ws or tcp://host:port (default: ws_url of the config file)"
	case setApp:
		return "app id"
	case setAPIKey:
		return "push API key of the app"
	case setKeyID:
		return "token key id of the app's secret"
	case setSecret:
		return "the app's token secret, base64"
	case setAdminURL:
		return "admin API base URL"
	case setAdminToken:
		return "admin API bearer token"
	case setCAFile:
		return "CA certificates (PEM) to trust for https://, wss:// and tls:// URLs besides the system's: the region's ca.crt (a path in the config file is relative to the file)"
	}
	return ""
}

func (f *fileConfig) get(s setting) string {
	switch s {
	case setPushURL:
		return f.PushURL
	case setURL:
		return f.WSURL
	case setApp:
		return f.App
	case setAPIKey:
		return f.APIKey
	case setKeyID:
		return f.KeyID
	case setSecret:
		return f.SecretBase64
	case setAdminURL:
		return f.AdminURL
	case setAdminToken:
		return f.AdminToken
	case setCAFile:
		return f.CAFile
	}
	return ""
}

// settingFlags returns fresh flags for ss plus --config and --ca-file
// (every URL may be https). Commands define the settings they use and the
// root defines them all, so both `pushctl --app a push …` and
// `pushctl push --app a …` work.
func settingFlags(ss ...setting) []cli.Flag {
	flags := []cli.Flag{&cli.StringFlag{Name: flagConfig, Usage: "config file (default $" + envConfig + ", else ./" + defaultConfigPath +
		" when present, else the dev region started last)", TakesFile: true}}
	if !slices.Contains(ss, setCAFile) {
		ss = append(ss, setCAFile)
	}
	for _, s := range ss {
		flags = append(flags, &cli.StringFlag{Name: s.flag(), Usage: s.usage() + " [$" + s.env() + "]", TakesFile: s == setCAFile})
	}
	return flags
}

// insecureFlag is the flag of the commands whose devices connect, for
// tests against a server whose certificate nothing trusts.
func insecureFlag() cli.Flag {
	return &cli.BoolFlag{Name: "insecure", Usage: "do not verify the server's certificate on wss:// and tls:// (tests only)"}
}

// deviceTLS is the TLS configuration devices dial wss:// and tls:// with:
// the ca-file setting's (k.tlsConfig), without verification when
// --insecure is set; nil for the system's roots.
func deviceTLS(c *cli.Context, k *config) (*tls.Config, error) {
	tc, err := k.tlsConfig()
	if err != nil || !c.Bool("insecure") {
		return tc, err
	}
	if tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	tc.InsecureSkipVerify = true
	return tc, nil
}

// config resolves settings for one command run: flags, then environment,
// then file.
type config struct {
	c    *cli.Context
	e    *env
	file fileConfig
	path string // the file read; "" when none
	// override, when set, replaces the config file (bench --local uses
	// the file its throwaway pushd wrote) and outranks the environment,
	// which describes some other server.
	override *fileConfig
}

// loadConfig reads the config file, if any: --config, else
// $PUSHCTL_CONFIG, else ./pushd-dev/pushctl.json when it exists, else the
// settings of the dev region started last, wherever its data dir is,
// while it runs (the pointer pushd --dev keeps: devPointer).
func loadConfig(c *cli.Context, e *env) (*config, error) {
	k := &config{c: c, e: e}
	path, explicit := lookupString(c, flagConfig)
	if !explicit {
		path = e.getenv(envConfig)
		explicit = path != ""
	}
	if !explicit {
		path = e.defaultConfig
		if _, err := os.Stat(path); path == "" || errors.Is(err, fs.ErrNotExist) {
			path = devPointer(e)
		}
	}
	if path == "" {
		return k, nil
	}
	b, err := readLimited(path, maxConfigBytes)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return k, nil
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	if err := json.Unmarshal(b, &k.file); err != nil {
		return nil, usagef("config file %s: %v", path, err)
	}
	k.path = path
	return k, nil
}

// devPointer returns the settings file of the dev region started last,
// as the file pushd --dev keeps in the user's configuration directory
// ($XDG_CONFIG_HOME/pushd/dev-settings, or ~/.config/…) names it, if that
// region's process still runs; "" otherwise.
func devPointer(e *env) string {
	dir := e.getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home := e.getenv("HOME")
		if home == "" {
			return ""
		}
		dir = filepath.Join(home, ".config")
	}
	b, err := readLimited(filepath.Join(dir, "pushd", "dev-settings"), 4096)
	if err != nil {
		return ""
	}
	path := strings.TrimSpace(string(b))
	var f fileConfig
	if b, err = readLimited(path, maxConfigBytes); err != nil || json.Unmarshal(b, &f) != nil || !running(f.PID) {
		return ""
	}
	return path
}

// running reports whether a process with pid exists.
func running(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than %d", path, st.Size(), limit)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b, nil
}

// get returns the value of s, or "".
func (k *config) get(s setting) string {
	if v, ok := lookupString(k.c, s.flag()); ok {
		return v
	}
	if k.override != nil {
		return k.override.get(s)
	}
	if v := k.e.getenv(s.env()); v != "" {
		return v
	}
	return k.file.get(s)
}

// require returns the value of s or a usage error saying where to set it.
func (k *config) require(s setting) (string, error) {
	if v := k.get(s); v != "" {
		return v, nil
	}
	where := "the config file"
	if k.path != "" {
		where = "config file " + k.path
	}
	return "", usagef("missing %s: set --%s or $%s (or %q in %s)", s.flag(), s.flag(), s.env(), s.fileKey(), where)
}

// fileValue returns the config file's (or override's) value of a key that
// has no flag of its own.
func (k *config) fileValue(f func(*fileConfig) string) string {
	if k.override != nil {
		return f(k.override)
	}
	return f(&k.file)
}

// tlsConfig is what https://, wss:// and tls:// connections trust: the
// system's roots and, when ca-file is set, the certificates in it (a
// region's own CA). Nil when ca-file is not set.
func (k *config) tlsConfig() (*tls.Config, error) {
	b, err := k.caPEM()
	if b == nil || err != nil {
		return nil, err
	}
	return load.TLSConfig(b)
}

// caPEM is the content of the ca-file setting, nil when it is not set.
func (k *config) caPEM() ([]byte, error) {
	path := k.get(setCAFile)
	if path == "" {
		return nil, nil
	}
	_, flagged := lookupString(k.c, setCAFile.flag())
	fromFile := !flagged && k.e.getenv(setCAFile.env()) == ""
	if fromFile && !filepath.IsAbs(path) {
		switch {
		case k.override != nil:
		case k.path != "":
			path = filepath.Join(filepath.Dir(k.path), path)
		}
	}
	b, err := readLimited(path, maxConfigBytes)
	if err != nil {
		return nil, usagef("--%s: %v", setCAFile.flag(), err)
	}
	if _, err := load.TLSConfig(b); err != nil {
		return nil, usagef("--%s %s: %v", setCAFile.flag(), path, err)
	}
	return b, nil
}

// secret returns the app's decoded token secret.
func (k *config) secret() ([]byte, error) {
	v, err := k.require(setSecret)
	if err != nil {
		return nil, err
	}
	return decodeSecret(v)
}

func decodeSecret(v string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(strings.TrimSpace(v)); err == nil {
			return b, nil
		}
	}
	return nil, usagef("--%s: not valid base64", setSecret.flag())
}

// lookupString returns the innermost explicitly set value of a string
// flag defined at several levels of the command tree.
func lookupString(c *cli.Context, name string) (string, bool) {
	for _, ctx := range c.Lineage() {
		if ctx.Command == nil || !defines(ctx.Command.Flags, name) {
			continue
		}
		if ctx.IsSet(name) {
			v, _ := ctx.Value(name).(string)
			return v, true
		}
	}
	return "", false
}

func defines(flags []cli.Flag, name string) bool {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}
