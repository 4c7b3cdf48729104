package caddybench

import "syscall"

// sysProcAttr kills Caddy with the test binary if it dies without
// running its cleanups (a timeout, a panic).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
