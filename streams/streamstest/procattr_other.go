//go:build !linux

package streamstest

import "syscall"

// procAttr has no parent-death signal outside Linux; t.Cleanup still kills the
// server when the test ends normally.
func procAttr() *syscall.SysProcAttr { return nil }
