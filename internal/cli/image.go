package cli

import (
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/gokrazy/tools/gok"

	"github.com/outpost-gw/outpost/image"
)

func runImageBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("image build", stderr)
	var o image.Options
	fs.StringVar(&o.Target, "target", "", "hardware target: amd64 (x86 boxes, VMs) or rpi (Raspberry Pi 4/5)")
	fs.StringVar(&o.Out, "out", "", "disk image file to write")
	fs.StringVar(&o.FleetFile, "fleet", "", "fleet file to bake in (broker URL, CA, fleet key, NTP servers)")
	fs.StringVar(&o.Version, "version", "", "version stamped into outpostd (default: this tool's version)")
	fs.Int64Var(&o.SizeBytes, "size", image.DefaultSizeBytes, "image size in bytes; /perm grows to the disk on first boot")
	fs.BoolVar(&o.KeepWorkDir, "keep", false, "keep the generated gokrazy instance directory")
	fs.BoolVar(&o.Verbose, "v", false, "show all of gok's output")
	fs.BoolVar(&o.DebugWeb, "debug-web", false, "development only: turn on gokrazy's web interface (port 8080, random password)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if !slices.Contains(image.Targets, o.Target) {
		return fmt.Errorf("%w: --target must be one of %v", errUsage, image.Targets)
	}
	if o.Out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	o.Progress = stdout
	return image.Build(ctx, o)
}

// runGok runs gok in this process. gok changes the working directory and
// exits the process on a failed build: fine for a one-shot command, which is
// how image.Build runs it.
func runGok(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return gok.Context{Args: args, Stdout: stdout, Stderr: stderr}.Execute(ctx)
}
