// outpost is the host-side tool: build images, run the demo, and (later)
// operate a fleet. It is a thin main over internal/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/outpost-gw/outpost/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
