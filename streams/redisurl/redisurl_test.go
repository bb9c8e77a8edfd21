package redisurl

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestParse_Forms(t *testing.T) {
	for _, tc := range []struct {
		url      string
		topology Topology
		addrs    []string
		master   string
		db       int
		user     string
		pass     string
		str      string
	}{
		{url: "redis://127.0.0.1:6379/0", topology: Single, addrs: []string{"127.0.0.1:6379"}, str: "single 127.0.0.1:6379 db 0"},
		{url: "redis://:secret@10.0.0.5/2", topology: Single, addrs: []string{"10.0.0.5:6379"}, db: 2, pass: "secret", str: "single 10.0.0.5:6379 db 2"},
		{url: "unix://pushd:pw@/run/redis/redis.sock?db=1", topology: Single, addrs: []string{"/run/redis/redis.sock"}, db: 1, user: "pushd", pass: "pw"},
		{url: "redis-sentinel://10.0.0.1,10.0.0.2:26380,[::1]/pushd", topology: Sentinel,
			addrs: []string{"10.0.0.1:26379", "10.0.0.2:26380", "[::1]:26379"}, master: "pushd",
			str: "sentinel master pushd db 0 via 10.0.0.1:26379,10.0.0.2:26380,[::1]:26379"},
		{url: "redis-sentinel://u:p%40ss@h1:1,h2:2/mymaster/3?dial_timeout=2s", topology: Sentinel,
			addrs: []string{"h1:1", "h2:2"}, master: "mymaster", db: 3, user: "u", pass: "p@ss"},
		{url: "redis-sentinel://h1:1/m?db=4", topology: Sentinel, addrs: []string{"h1:1"}, master: "m", db: 4},
		{url: "redis-cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3", topology: Cluster,
			addrs: []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:6379"},
			str:   "cluster seeds 10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:6379"},
		{url: "redis-cluster://:pw@h:7000/?pool_size=50", topology: Cluster, addrs: []string{"h:7000"}, pass: "pw"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			o, err := Parse(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			if o.Topology != tc.topology || !slices.Equal(o.Addrs, tc.addrs) || o.MasterName != tc.master ||
				o.DB != tc.db || o.Username != tc.user || o.Password != tc.pass {
				t.Fatalf("got %+v", o)
			}
			if tc.str != "" && o.String() != tc.str {
				t.Fatalf("String() = %q, want %q", o.String(), tc.str)
			}
			if tc.pass != "" && strings.Contains(o.String(), tc.pass) {
				t.Fatalf("String() %q shows the password", o.String())
			}
		})
	}
}

func TestParse_QueryTunables(t *testing.T) {
	o, err := Parse("redis-cluster://h:7000?dial_timeout=2s&pool_size=7&max_retries=1")
	if err != nil {
		t.Fatal(err)
	}
	u := o.Universal()
	if u.DialTimeout != 2*time.Second || u.PoolSize != 7 || u.MaxRetries != 1 || !u.ContextTimeoutEnabled || !u.IsClusterMode {
		t.Fatalf("universal options %+v", u)
	}
	o, err = Parse("redis://h:6379/0?read_timeout=3s")
	if err != nil {
		t.Fatal(err)
	}
	if u := o.Universal(); u.ReadTimeout != 3*time.Second || !u.ContextTimeoutEnabled {
		t.Fatalf("universal options %+v", u)
	}
}

func TestParse_RefusesMalformed(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"127.0.0.1:6379", "want redis://"},
		{"http://h:1", `unknown scheme "http"`},
		{"redis-sentinel://h1,h2", "no master name"},
		{"redis-sentinel:///pushd", "no address"},
		{"redis-sentinel://h1,,h2/pushd", "empty address"},
		{"redis-sentinel://h1:99999/pushd", "not 1-65535"},
		{"redis-sentinel://h1:x/pushd", "not 1-65535"},
		{"redis-sentinel://h1/pushd/x", `database "x"`},
		{"redis-sentinel://h1/a/1/2", "want /<master name>[/<db>]"},
		{"redis-sentinel://h1,h1:26379/pushd", "listed twice"},
		{"redis-sentinel://h1/pushd?bogus=1", "unexpected option: bogus"},
		{"redis-cluster://h1:1/2", "a cluster URL has none"},
		{"redis-cluster://h1:1?db=2", "only database 0"},
		{"redis-cluster://:secret@", "no address"},
		{"redis://h:1/x", "invalid database number"},
		{"redis://:secret@h:1/0?nope=1", "unexpected option: nope"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			_, err := Parse(tc.url)
			if err == nil {
				t.Fatal("parsed")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error %q shows the password", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"redis://u:secret@h:1/0":               "redis://u:xxxxx@h:1/0",
		"redis://:secret@h:1":                  "redis://:xxxxx@h:1",
		"redis-sentinel://:s@cr@t@a,b/pushd":   "redis-sentinel://:xxxxx@a,b/pushd",
		"redis://h:1/0":                        "redis://h:1/0",
		"redis://user@h:1":                     "redis://user@h:1",
		"not a url":                            "not a url",
		"redis-cluster://h:1?x=a@b":            "redis-cluster://h:1?x=a@b",
		"unix://u:secret@/run/redis.sock?db=1": "unix://u:xxxxx@/run/redis.sock?db=1",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// NewClient picks the client go-redis's universal constructor gives each
// topology; streams batches script calls only on a *redis.Client.
func TestNewClient_Types(t *testing.T) {
	for url, want := range map[string]string{
		"redis://127.0.0.1:1/0":                "*redis.Client",
		"redis-sentinel://127.0.0.1:1/pushd":   "*redis.Client",
		"redis-cluster://127.0.0.1:1":          "*redis.ClusterClient",
		"redis-cluster://127.0.0.1:1,[::1]:2":  "*redis.ClusterClient",
		"unix:///tmp/nonexistent-pushd.sock":   "*redis.Client",
		"redis-sentinel://127.0.0.1:1,h:2/x/1": "*redis.Client",
	} {
		o, err := Parse(url)
		if err != nil {
			t.Fatal(err)
		}
		c := NewClient(o)
		var got string
		switch c.(type) {
		case *redis.Client:
			got = "*redis.Client"
		case *redis.ClusterClient:
			got = "*redis.ClusterClient"
		default:
			got = "other"
		}
		_ = c.Close()
		if got != want {
			t.Errorf("%s: %s, want %s", url, got, want)
		}
	}
}
