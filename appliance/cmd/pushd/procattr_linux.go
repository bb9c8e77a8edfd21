package main

import "syscall"

// childProcAttr makes the kernel kill the dev redis-server if pushd dies
// without stopping it, so a crash never leaves an orphan holding the port.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
