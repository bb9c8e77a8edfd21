package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/raftmeta"
)

// openMeta opens this node's Raft metadata store. A bootstrapping node
// (the first of a region, or --dev) forms a one-voter cluster and waits to
// lead it; Bootstrap is a no-op on every later start.
func openMeta(ctx context.Context, o *options, log *slog.Logger) (*raftmeta.Store, error) {
	meta, err := raftmeta.Open(raftmeta.Config{
		ID: o.NodeID, DataDir: o.DataDir,
		RaftBind: o.RaftAddr, RaftAdvertise: o.RaftAdvertise,
		Logger: log, RaftLogLevel: slog.LevelWarn,
	})
	if err != nil {
		return nil, fmt.Errorf("open raft metadata in %s: %w", o.DataDir, err)
	}
	if o.Bootstrap || o.Dev {
		if err := meta.Bootstrap(); err != nil {
			meta.Close()
			return nil, fmt.Errorf("bootstrap raft: %w", err)
		}
	}
	return meta, nil
}

// selfMember is this node's member record, with the addresses it bound.
func selfMember(o *options, meta *raftmeta.Store, node *appliance.Node, apis *apiServers) raftmeta.Member {
	a := node.Addrs()
	adv := func(flagged, bound string) string {
		if flagged != "" {
			return flagged
		}
		return bound
	}
	ws, tcp := "ws://"+adv(o.AdvertiseWS, a.WS)+"/v1/ws", ""
	if a.TCP != "" {
		tcp = "tcp://" + adv(o.AdvertiseTCP, a.TCP)
	}
	if o.TLSCert != "" {
		ws = "wss://" + adv(o.AdvertiseWS, a.WS) + "/v1/ws"
		if a.TCP != "" {
			tcp = "tls://" + adv(o.AdvertiseTCP, a.TCP)
		}
	}
	return raftmeta.Member{ID: node.ID(), RaftAddr: meta.RaftAddr(), AdminAddr: adv(o.AdvertiseAdmin, apis.adminAddr()),
		DeviceAddr: ws, TCPAddr: tcp, PushAddr: adv(o.AdvertisePush, apis.pushAddr()), Weight: o.Weight}
}

// register records this node in the region: directly when it leads (a
// bootstrapped region), through the admin API of --join otherwise. Both
// are idempotent, so a start with --join, or as the leader, refreshes the
// node's addresses. A restarted member started without --join that is not
// the leader keeps its replicated record, and is warned if its addresses
// changed.
func register(ctx context.Context, o *options, meta *raftmeta.Store, node *appliance.Node, apis *apiServers, log *slog.Logger) error {
	m := selfMember(o, meta, node, apis)
	if o.Join == "" {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := meta.WaitForLeader(wctx); err != nil {
			return fmt.Errorf("wait for a raft leader: %w", err)
		}
		if !meta.IsLeader() {
			// A restarted member of a larger region: its record is
			// already replicated.
			if cur, ok := meta.State().Members[m.ID]; ok && (cur.AdminAddr != m.AdminAddr || cur.DeviceAddr != m.DeviceAddr ||
				cur.TCPAddr != m.TCPAddr || cur.PushAddr != m.PushAddr || cur.RaftAddr != m.RaftAddr) {
				log.Warn("this node's addresses differ from its region record; restart with --join <any member's admin address> to update them",
					"recorded_device_addr", cur.DeviceAddr, "device_addr", m.DeviceAddr)
			}
			return nil
		}
		return meta.Join(ctx, m, raftmeta.Caller{})
	}
	body, _ := json.Marshal(map[string]any{"id": m.ID, "raft_addr": m.RaftAddr, "admin_addr": m.AdminAddr,
		"device_addr": m.DeviceAddr, "tcp_addr": m.TCPAddr, "push_addr": m.PushAddr, "weight": m.Weight})
	backoff := 250 * time.Millisecond
	for {
		err := postJoin(ctx, o.Join, o.JoinToken, body)
		if err == nil {
			log.Info("joined the region", "via", o.Join)
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return err
		}
		log.Warn("join the region: retrying", "via", o.Join, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// permanentError is a join refusal a retry cannot fix (bad token, bad
// request).
type permanentError struct{ error }

func postJoin(ctx context.Context, addr, tok string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/admin/nodes/join", bytes.NewReader(body))
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode >= 500:
		return fmt.Errorf("%s answered %s: %s", addr, resp.Status, bytes.TrimSpace(msg))
	}
	return permanentError{fmt.Errorf("%s refused the join: %s: %s", addr, resp.Status, bytes.TrimSpace(msg))}
}

// ensureAdminToken creates the region's first admin token when it has
// none, writes it to <data-dir>/admin-token (mode 0600) and returns it. It
// runs on the bootstrapping leader only.
func ensureAdminToken(ctx context.Context, o *options, meta *raftmeta.Store, log *slog.Logger) (string, error) {
	path := filepath.Join(o.DataDir, "admin-token")
	if len(meta.State().AdminTokens) > 0 || !meta.IsLeader() {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", nil // created elsewhere or earlier; not ours to show
		}
		return string(bytes.TrimSpace(b)), nil
	}
	secret, tok := raftmeta.NewAdminToken("root", raftmeta.RoleAdmin)
	cmd := raftmeta.CreateAdminToken(tok)
	cmd.Actor = "bootstrap:" + o.NodeID
	if _, err := meta.Apply(ctx, cmd); err != nil {
		return "", fmt.Errorf("create the first admin token: %w", err)
	}
	if err := writeFileAtomic(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", err
	}
	log.Warn("created the region's first admin token (role admin); keep it safe", "file", path)
	return secret, nil
}
