package main

import (
	"log/slog"
	"net"
	"os"
)

// notify sends a state line to systemd's notify socket (Type=notify
// units). Outside systemd NOTIFY_SOCKET is unset and it does nothing.
func notify(log *slog.Logger, state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		log.Warn("systemd notify", "err", err)
		return
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		log.Warn("systemd notify", "err", err)
	}
}

// notifyReady tells systemd the node serves: its listeners are bound,
// its delivery stream exists in Redis and its heartbeat is there, it is
// a member of the region, and its metadata holds everything the region
// had committed when it started.
func notifyReady(log *slog.Logger) { notify(log, "READY=1\nSTATUS=serving") }

// notifyStopping tells systemd the node is stopping: it drains its
// devices to the other nodes before it exits.
func notifyStopping(log *slog.Logger) {
	notify(log, "STOPPING=1\nSTATUS=draining: sending devices to the other nodes")
}
