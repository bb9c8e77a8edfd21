package ctl

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
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
)

func allSettings() []setting {
	return []setting{setPushURL, setURL, setApp, setAPIKey, setKeyID, setSecret, setAdminURL, setAdminToken}
}

func (s setting) flag() string { return string(s) }

func (s setting) env() string {
	return "PUSHD_" + strings.ToUpper(strings.ReplaceAll(string(s), "-", "_"))
}

// fileKey names the setting's field in the config file.
func (s setting) fileKey() string {
	if s == setURL {
		return "ws_url"
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
	}
	return ""
}

// settingFlags returns fresh flags for ss plus --config. Commands define
// the settings they use and the root defines them all, so both
// `pushctl --app a push …` and `pushctl push --app a …` work.
func settingFlags(ss ...setting) []cli.Flag {
	flags := []cli.Flag{&cli.StringFlag{Name: flagConfig, Usage: "config file (default $" + envConfig + ", else ./" + defaultConfigPath + " when present)", TakesFile: true}}
	for _, s := range ss {
		flags = append(flags, &cli.StringFlag{Name: s.flag(), Usage: s.usage() + " [$" + s.env() + "]"})
	}
	return flags
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

// loadConfig reads the config file, if any.
func loadConfig(c *cli.Context, e *env) (*config, error) {
	k := &config{c: c, e: e}
	path, explicit := lookupString(c, flagConfig)
	if !explicit {
		path = e.getenv(envConfig)
		explicit = path != ""
	}
	if !explicit {
		path = e.defaultConfig
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
