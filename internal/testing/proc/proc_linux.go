package proc

import "syscall"

// SysProcAttr makes a child die with the test binary when the binary dies
// without running its cleanups (a timeout, a panic), so no program of a
// failed test keeps a port or a CPU.
func SysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
