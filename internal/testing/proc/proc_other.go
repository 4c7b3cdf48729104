//go:build !linux

package proc

import "syscall"

// SysProcAttr is nil where the kernel has no parent-death signal.
func SysProcAttr() *syscall.SysProcAttr { return nil }
