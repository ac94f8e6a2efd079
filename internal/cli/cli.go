// Package cli implements the outpost host command. Main is what
// cmd/outpost runs; tests call it in-process.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/outpost-gw/outpost/internal/buildinfo"
)

type command struct {
	name, args, help string
	run              func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"demo", "[--listen ADDR] [--data DIR]", "run Outpost on embedded defaults in a temp dir and print what to open", runDemo},
		{"image build", "--target amd64|rpi --out FILE.img [--fleet FILE] [--version V] [--size BYTES]", "build a flashable disk image", runImageBuild},
		{"fleet init", "--dir D --name N --broker-url URL [--broker-host H]... [--ntp S]...", "create a fleet: CA, keys, claim credential, fleet file, mosquitto config", runFleetInit},
		{"fleet claim", "CODE [--dir D] [--group G]", "enrol the box showing this claim code", runFleetClaim},
		{"fleet revoke", "DEVICE [--dir D]", "revoke a box's certificates (the broker refuses it)", runFleetRevoke},
		{"fleet devices", "[--dir D]", "list the fleet's boxes", runFleetDevices},
		{"fleet command", "DEVICE NAME [--dir D]", "send a command (ping, status) and print the answer", runFleetCommand},
		{"fleet export", "DEVICE --camera C --url URL (--start T [--duration 60s] | --snapshot) [--id ID] [--wait 2h] | DEVICE --cancel ID", "have a box upload a clip or a snapshot to a resumable upload URL, and follow it; or stop one", runFleetExport},
		{"fleet hold", "DEVICE --camera C --start T --end T [--until T | --for 720h] [--id ID] | DEVICE --release ID", "keep a camera's recordings in a range from retention until released or expired", runFleetHold},
		{"fleet config push", "--to DEVICE|group:NAME --file CONFIG.json [--dir D]", "set and send the desired config of a box or a group", runFleetConfigPush},
		{"fleet config export", "DEVICE [--out FILE] [--dir D]", "write a box's config, to move it to a replacement box", runFleetConfigExport},
		{"fleet config import", "DEVICE --file FILE [--dir D]", "push an exported config to a (replacement) box", runFleetConfigImport},
		{"fleet token", "--user U --device D --camera C... [--allow live,playback,export,admin] [--ttl 1h] [--single-use]", "mint a viewer token the box verifies offline", runFleetToken},
		{"fleet audit", "DEVICE [--dir D]", "show a box's audit trail as the fleet received it, and verify its chain", runFleetAudit},
		{"fleet serve", "[--dir D]", "the fleet's service: answer certificate renewals, log what boxes report", runFleetServe},
		{"fleet watch", "[--dir D] [--every 2s]", "a live table of boxes: online, version, health, alerts", runFleetWatch},
		{"fleet events", "[--dir D]", "follow events, audit entries and command results", runFleetEvents},
		{"release keygen", "[--dir D] [--root N] [--threshold K]", "make the update root keys, a release key and the signed release-keys document", runReleaseKeygen},
		{"release build", "--target amd64|rpi --version N --out DIR [--fleet FILE] [--ldflags FLAGS]", "build a release: disk image plus the root/boot partition images an update streams", runReleaseBuild},
		{"release sign", "--release DIR --url-base URL | --version V --target amd64|rpi --artifact NAME=FILE=URL... [--dir D] [--out FILE]", "sign a release manifest", runReleaseSign},
		{"release push", "--to DEVICE|group:NAME --release DIR [--keys FILE] [--canary N|group:NAME] [--max-failures K] [--wave W]", "staged rollout: canary first, then the rest; halts by itself on failures", runReleasePush},
		{"gok", "ARGS...", "run the embedded gok (gokrazy's tool) as is", runGok},
		{"version", "", "print the version", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
			fmt.Fprintln(stdout, buildinfo.Version)
			return nil
		}},
	}
}

// errUsage marks an error that should be followed by the usage text.
var errUsage = errors.New("usage")

// Main runs the command line and returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	for _, c := range commands() {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.name {
			err := c.run(ctx, args[len(words):], stdout, stderr)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.Is(err, errUsage):
				fmt.Fprintf(stderr, "outpost %s: %v\nusage: outpost %s %s\n", c.name, err, c.name, c.args)
				return 2
			}
			fmt.Fprintf(stderr, "outpost %s: %v\n", c.name, err)
			return 1
		}
	}
	usage(stderr)
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		return 0
	}
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "outpost: the host-side tool for Outpost gateways\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  outpost %s %s\n      %s\n", c.name, c.args, c.help)
	}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("outpost "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}
