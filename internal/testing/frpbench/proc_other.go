//go:build !linux

package frpbench

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
