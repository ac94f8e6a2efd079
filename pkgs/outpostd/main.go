// outpostd is the one long-running daemon of an Outpost image: it owns the
// state store in /perm and runs every subsystem. See internal/daemon.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/outpost-gw/outpost/internal/buildinfo"
	"github.com/outpost-gw/outpost/internal/daemon"
)

func main() {
	var opts daemon.Options
	flag.StringVar(&opts.ConfigPath, "config", "", "JSON config file (default: built-in defaults; see docs/config.md)")
	flag.StringVar(&opts.DataDir, "data", daemon.DefaultDataDir, "data directory (state store, keys, recordings)")
	flag.StringVar(&opts.FleetPath, "fleet", daemon.DefaultFleetPath, "fleet file baked into the image (missing: no fleet)")
	flag.StringVar(&opts.Console, "console", "", "device that gets a one-line status when up (the image sets /dev/console)")
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *version {
		fmt.Println(buildinfo.Version)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := daemon.Run(ctx, opts); err != nil {
		fmt.Fprintf(os.Stderr, "outpostd: %v\n", err)
		os.Exit(1)
	}
}
