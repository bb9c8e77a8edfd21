package ctl

import "syscall"

// workerProcAttr puts a bench worker in its own process group, so a Ctrl-C
// in the terminal reaches pushctl only, which then stops its workers in
// order. A worker whose parent died stops by itself at end of stdin.
func workerProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// serverProcAttr does the same for the throwaway pushd of bench --local,
// and has the kernel send it SIGTERM if pushctl dies without stopping it
// (killed with SIGKILL), so it never outlives the run.
func serverProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
