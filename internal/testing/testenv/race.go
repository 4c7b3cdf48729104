//go:build race

package testenv

// Race reports whether the race detector is on: tests that move a
// gigabyte skip under it (the plain run covers them).
const Race = true
