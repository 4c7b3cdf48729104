//go:build !linux

package caddybench

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
