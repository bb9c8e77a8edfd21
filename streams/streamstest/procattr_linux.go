package streamstest

import "syscall"

// procAttr makes the kernel kill redis-server if the test binary dies without
// running its cleanups (a panic in another goroutine, a -timeout kill), so no
// orphaned server outlives the test run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
