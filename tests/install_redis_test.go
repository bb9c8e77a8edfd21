package tests

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushd/pushd/internal/poll"
)

// TestInstallRedis_ARegionsRedisTakesPushdOnly runs the install step of a
// region's Redis host (systemd/install-redis.sh) on a redis.conf of
// Debian's shape, in a directory of its own, then starts redis-server on
// the result: it listens on the address given and loopback only, its
// default user is off, and pushd's user logs in with the password the
// step wrote (mode 0600, never in the ACL file), may write pushd's keys
// and no others, and may not run CONFIG. A second run keeps the password.
func TestInstallRedis_ARegionsRedisTakesPushdOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	redisEtc, pushdEtc, data := filepath.Join(dir, "redis"), filepath.Join(dir, "pushd"), filepath.Join(dir, "data")
	for _, d := range []string{redisEtc, data, filepath.Join(dir, "path")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port := freePorts(t, 1)[0]
	conf := fmt.Sprintf("port %d\nbind 127.0.0.1 -::1\ndir %s\ndaemonize no\nsave \"\"\nlogfile %s\n", port, data, filepath.Join(data, "redis.log"))
	if err := os.WriteFile(filepath.Join(redisEtc, "redis.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// systemctl only records that it was asked to restart Redis.
	calls := filepath.Join(dir, "systemctl.log")
	if err := os.WriteFile(filepath.Join(dir, "path", "systemctl"), []byte("#!/bin/sh\necho \"$*\" >>"+calls+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func() {
		t.Helper()
		cmd := exec.Command("bash", "../systemd/install-redis.sh", "127.0.0.2")
		cmd.Env = append(os.Environ(), "PATH="+filepath.Join(dir, "path")+":"+os.Getenv("PATH"), "REDIS_ETC="+redisEtc, "PUSHD_ETC="+pushdEtc)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("install-redis.sh: %v\n%s", err, out)
		}
	}
	run()
	pwFile := filepath.Join(pushdEtc, "redis-password")
	st, err := os.Stat(pwFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the password file: %v, mode %v", err, st.Mode().Perm())
	}
	pw, _ := os.ReadFile(pwFile)
	password := strings.TrimSpace(string(pw))
	acl, _ := os.ReadFile(filepath.Join(redisEtc, "pushd.acl"))
	if len(password) < 32 || bytes.Contains(acl, []byte(password)) {
		t.Fatalf("password of %d characters; the ACL file holds it: %v", len(password), bytes.Contains(acl, []byte(password)))
	}
	run()
	if again, _ := os.ReadFile(pwFile); !bytes.Equal(again, pw) {
		t.Fatal("a second run changed the password")
	}
	redisConf, _ := os.ReadFile(filepath.Join(redisEtc, "redis.conf"))
	if n := strings.Count(string(redisConf), "include "); n != 1 || !strings.Contains(string(redisConf), "bind 127.0.0.1 -::1 127.0.0.2\n") {
		t.Fatalf("redis.conf after two runs:\n%s", redisConf)
	}
	if got, _ := os.ReadFile(calls); string(got) != "restart redis-server\nrestart redis-server\n" {
		t.Fatalf("systemctl calls %q", got)
	}
	if cmd := exec.Command("bash", "../systemd/install-redis.sh", "0.0.0.0"); cmd.Run() == nil {
		t.Fatal("install-redis.sh took every interface as the private address")
	}

	srv := exec.Command("redis-server", filepath.Join(redisEtc, "redis.conf"))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	ctx := context.Background()
	client := func(host, user, pw string) *redis.Client {
		rdb := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(host, fmt.Sprint(port)), Username: user, Password: pw,
			MaxRetries: -1, DialTimeout: time.Second})
		t.Cleanup(func() { _ = rdb.Close() })
		return rdb
	}
	pushd := client("127.0.0.2", "pushd", password)
	poll.Until(t, 20*time.Second, func() error { return pushd.Ping(ctx).Err() })
	if err := pushd.XAdd(ctx, &redis.XAddArgs{Stream: "pushd:{d}:inbox", Values: []string{"m", "x"}}).Err(); err != nil {
		t.Fatalf("pushd's user writing pushd's keys: %v", err)
	}
	for name, err := range map[string]error{
		"another key":      pushd.Set(ctx, "other:key", "x", 0).Err(),
		"CONFIG GET":       pushd.ConfigGet(ctx, "dir").Err(),
		"FLUSHALL":         pushd.FlushAll(ctx).Err(),
		"the default user": client("127.0.0.2", "", "").Ping(ctx).Err(),
		"a wrong password": client("127.0.0.2", "pushd", "guess").Ping(ctx).Err(),
		"another address":  client("127.0.0.3", "pushd", password).Ping(ctx).Err(),
	} {
		if err == nil {
			t.Errorf("%s: allowed", name)
		}
	}
}
