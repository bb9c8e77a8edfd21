package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/regiontls"
)

// openMeta opens this node's Raft metadata store. A bootstrapping node
// (the first of a region, or --dev) forms a one-voter cluster and waits to
// lead it; Bootstrap is a no-op on every later start.
func openMeta(ctx context.Context, o *options, rt *regiontls.Node, log *slog.Logger) (*raftmeta.Store, error) {
	cfg := raftmeta.Config{
		ID: o.NodeID, DataDir: o.DataDir,
		RaftBind: o.RaftAddr, RaftAdvertise: o.RaftAdvertise,
		Logger: log, RaftLogLevel: slog.LevelWarn,
	}
	if rt != nil {
		cfg.TLS = &raftmeta.TLS{Server: rt.ServerConfig(), Client: rt.ClientConfig}
	}
	meta, err := raftmeta.Open(cfg)
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
func register(ctx context.Context, o *options, meta *raftmeta.Store, node *appliance.Node, apis *apiServers, rt *regiontls.Node, log *slog.Logger) error {
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
	tok, err := o.joinToken()
	if err != nil {
		return err
	}
	url, hc := "http://"+o.Join+"/v1/admin/nodes/join", http.DefaultClient
	if rt != nil {
		// As a node: with its certificate, to a member that must present
		// one of the region.
		url, hc = "https://"+o.Join+"/v1/admin/nodes/join", &http.Client{Transport: rt.Transport()}
		defer hc.CloseIdleConnections()
	}
	if err := retryJoin(ctx, o, log, "join the region", func(ctx context.Context) error {
		return postAdmin(ctx, hc, url, tok, body, nil)
	}); err != nil {
		return err
	}
	log.Info("joined the region", "via", o.Join)
	return nil
}

// permanentError is a join refusal a retry cannot fix (bad token, bad
// request).
type permanentError struct{ error }

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
