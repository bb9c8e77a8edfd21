//go:build !linux

package load

import "syscall"

// Outside Linux, workers and the local server share the parent's process
// group: they stop on a Ctrl-C together with it, and a worker still stops
// at end of stdin.
func workerProcAttr() *syscall.SysProcAttr { return nil }

func serverProcAttr() *syscall.SysProcAttr { return nil }
