// Command pc2 is the PC2 host tool: identities, supernodes, record publishing
// and resolution. All logic lives in package cli so tests can run it in-process.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/pc2/pc2/cmd/pc2/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cli.Execute(ctx, os.Args[1:], cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pc2:", err)
		os.Exit(cli.ExitCode(err))
	}
}
