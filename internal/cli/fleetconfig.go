package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/outpost-gw/outpost/internal/atomicfile"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/operator"
)

// runFleetConfigPush stores a config as the desired config of a box or of
// every box of a group and sends it (retained: offline boxes get it later).
func runFleetConfigPush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet config push", stderr)
	dir := fleetDirFlag(fs)
	broker := fs.String("broker", "", "broker URL (default: the fleet file's)")
	to := fs.String("to", "", "DEVICE, or group:NAME")
	file := fs.String("file", "", "config JSON (docs/config.md)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *to == "" || *file == "" {
		return fmt.Errorf("%w: --to and --file are required", errUsage)
	}
	doc, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	return pushConfig(ctx, *dir, *broker, *to, doc, stdout)
}

func pushConfig(ctx context.Context, dir, broker, to string, doc []byte, stdout io.Writer) error {
	f, op, err := connectOperator(ctx, dir, broker, operator.Options{})
	if err != nil {
		return err
	}
	defer op.Close()
	targets := []string{to}
	if g, ok := strings.CutPrefix(to, "group:"); ok {
		if targets, err = f.Group(g); err != nil {
			return err
		}
		if len(targets) == 0 {
			return fmt.Errorf("group %q has no active boxes", g)
		}
	}
	for _, dev := range targets {
		d, err := f.SetDesired(dev, doc)
		if err != nil {
			return err
		}
		if err := op.PushConfig(ctx, dev, d); err != nil {
			return fmt.Errorf("%s: %w", dev, err)
		}
		fmt.Fprintf(stdout, "%s: config v%d sent; the box reports applied or refused (outpost fleet events)\n", dev, d.Version)
	}
	return nil
}

// runFleetConfigExport writes a box's desired config to a file, so that it
// can be imported into the box that replaces it.
func runFleetConfigExport(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet config export", stderr)
	dir := fleetDirFlag(fs)
	out := fs.String("out", "", "file to write (default: stdout)")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	d, ok, err := f.Desired(pos[0])
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s has no config set by the fleet (it runs its image's defaults)", pos[0])
	}
	var pretty json.RawMessage = d.Config
	b, _ := json.MarshalIndent(pretty, "", "  ")
	b = append(b, '\n')
	if *out == "" {
		_, err = stdout.Write(b)
		return err
	}
	return atomicfile.WriteFile(*out, b, 0o600)
}

// runFleetConfigImport pushes an exported config to a (replacement) box.
func runFleetConfigImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet config import", stderr)
	dir := fleetDirFlag(fs)
	broker := fs.String("broker", "", "broker URL (default: the fleet file's)")
	file := fs.String("file", "", "config exported from the old box")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if *file == "" {
		return fmt.Errorf("%w: --file is required", errUsage)
	}
	doc, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	return pushConfig(ctx, *dir, *broker, pos[0], doc, stdout)
}
