//go:build !linux

package load

import "syscall"

func deferPortChoice(_, _ string, _ syscall.RawConn) error { return nil }
