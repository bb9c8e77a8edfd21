//go:build !linux

package client

import "syscall"

func deferPortChoice(_, _ string, _ syscall.RawConn) error { return nil }
