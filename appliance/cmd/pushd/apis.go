package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/pushd/pushd/appliance"
	"github.com/pushd/pushd/appliance/adminapi"
	"github.com/pushd/pushd/appliance/bridge"
	"github.com/pushd/pushd/appliance/pushapi"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/regiontls"
)

// apiServers are the node's two HTTP APIs, each on its own listener: the
// push API for business servers and the admin API for pushctl and the
// other nodes. They are bound before the node starts, so the node can
// register their addresses in the region, and served once it has.
type apiServers struct {
	pushLis, adminLis net.Listener
	push, admin       *http.Server
	done              chan error // one value per server when it stops
}

// listenAPIs binds the push and admin listeners. With the region's TLS
// (rt) the admin API is HTTPS with the node's certificate, taking node
// certificates from other nodes; the push API is HTTPS with its own
// certificate (push), or with the node's in a --dev-tls region.
func listenAPIs(o *options, rt *regiontls.Node, push *keyPair) (*apiServers, error) {
	pushLis, err := net.Listen("tcp", o.PushAddr)
	if err != nil {
		return nil, fmt.Errorf("listen push %s: %w", o.PushAddr, err)
	}
	adminLis, err := net.Listen("tcp", o.AdminAddr)
	if err != nil {
		_ = pushLis.Close()
		return nil, fmt.Errorf("listen admin %s: %w", o.AdminAddr, err)
	}
	a := &apiServers{pushLis: pushLis, adminLis: adminLis, done: make(chan error, 2)}
	switch {
	case push != nil:
		a.pushLis = tls.NewListener(pushLis, push.serverConfig())
	case rt != nil && o.Dev:
		a.pushLis = tls.NewListener(pushLis, nodeServerConfig(rt))
	}
	if rt != nil {
		a.adminLis = tls.NewListener(adminLis, rt.HTTPServerConfig())
	}
	return a, nil
}

func (a *apiServers) pushAddr() string  { return a.pushLis.Addr().String() }
func (a *apiServers) adminAddr() string { return a.adminLis.Addr().String() }

// serve serves both APIs over node and meta, and the bridge when there is
// one, until shutdown; rt is the region's TLS on this node (nil without),
// names the addresses its certificate is for.
func (a *apiServers) serve(node *appliance.Node, meta *raftmeta.Store, rt *regiontls.Node, names regiontls.Names, b *bridge.Bridge, log *slog.Logger) {
	pushOpts := pushapi.Options{Logger: log, Registry: node.Registry()}
	adminOpts := adminapi.Options{Logger: log}
	if b != nil {
		pushOpts.Bridge, adminOpts.Bridge = b, b
	}
	if rt != nil {
		adminOpts.TLS = &adminapi.TLS{Node: rt, Names: names}
	}
	a.push = apiServer(pushapi.New(node, pushOpts), log)
	a.admin = apiServer(adminapi.New(node, meta, adminOpts), log)
	go func() { a.done <- a.push.Serve(a.pushLis) }()
	go func() { a.done <- a.admin.Serve(a.adminLis) }()
}

// apiServer is a std net/http server for an API: few, busy connections,
// unlike the device listeners.
func apiServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// shutdown stops taking requests, lets those under way finish within ctx,
// and waits for both servers' goroutines.
func (a *apiServers) shutdown(ctx context.Context) {
	if a.push == nil {
		_ = a.pushLis.Close()
		_ = a.adminLis.Close()
		return
	}
	_ = a.push.Shutdown(ctx)
	_ = a.admin.Shutdown(ctx)
	<-a.done
	<-a.done
}
