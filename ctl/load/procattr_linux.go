package load

import "syscall"

// workerProcAttr puts a worker in its own process group, so a Ctrl-C in
// the terminal reaches the parent only, which then stops its workers in
// order. A worker whose parent died stops by itself at end of stdin.
func workerProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// serverProcAttr does the same for the throwaway pushd of StartLocal, and
// has the kernel send it SIGTERM if its parent dies without stopping it
// (killed with SIGKILL), so it never outlives the run.
func serverProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
