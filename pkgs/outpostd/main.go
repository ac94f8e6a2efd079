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
	"github.com/outpost-gw/outpost/ota/install"
	"github.com/outpost-gw/outpost/ota/trialguard"
)

// crashOnTrialBoot, set at build time (-ldflags -X main.crashOnTrialBoot=why),
// makes outpostd exit at once when trial-booted: an image whose daemon never
// reaches its health gate, for the VM test of the trial guard.
var crashOnTrialBoot string

// reboot asks gokrazy to reboot (it syncs and unmounts /perm); failing that,
// it syncs and reboots itself.
func reboot(ctx context.Context) error {
	if g, err := install.NewGokrazy(ctx, ""); err == nil {
		if err := g.Reboot(ctx); err == nil {
			return nil
		}
	}
	syscall.Sync()
	return syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
}

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
	tuneGC()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// First, before anything that could crash: a trial-booted version that
	// keeps failing to start, or never reaches its health gate, reboots
	// back to the old slot.
	guard := &trialguard.Guard{Dir: opts.DataDir, Trial: (&install.Gokrazy{}).TrialBooted, Reboot: reboot}
	if err := guard.Start(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "outpostd: %v\n", err)
	}
	opts.TrialGuard = guard
	if trial, _ := (&install.Gokrazy{}).TrialBooted(); trial && crashOnTrialBoot != "" {
		fmt.Fprintf(os.Stderr, "outpostd: crashing on a trial boot on purpose (%s)\n", crashOnTrialBoot)
		os.Exit(1)
	}
	if err := daemon.Run(ctx, opts); err != nil {
		fmt.Fprintf(os.Stderr, "outpostd: %v\n", err)
		os.Exit(1)
	}
}
