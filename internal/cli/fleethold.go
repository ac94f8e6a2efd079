package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/recorder/hold"
)

// runFleetHold puts a box's recordings of one camera in a time range on
// hold (retention keeps them until released or expired), or releases a
// hold.
func runFleetHold(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet hold", stderr)
	dir := fleetDirFlag(fs)
	broker := fs.String("broker", "", "broker URL (default: the fleet file's)")
	camera := fs.String("camera", "", "camera id")
	start := fs.String("start", "", "start of the range to keep, RFC 3339")
	end := fs.String("end", "", "end of the range to keep, RFC 3339 (at most 31 days after --start)")
	until := fs.String("until", "", "when the hold expires, RFC 3339 (default: --for from now)")
	forDur := fs.Duration("for", 30*24*time.Hour, "how long the hold lasts, if --until is not given (at most 366 days)")
	id := fs.String("id", "", "hold id, to release or replace it later (default: random)")
	release := fs.String("release", "", "release the hold with this id instead")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	name, cmdArgs := "hold.release", map[string]any{"id": *release}
	if *release == "" {
		if *camera == "" || *start == "" || *end == "" {
			return fmt.Errorf("%w: --camera, --start and --end are required (or --release ID)", errUsage)
		}
		if *id == "" {
			b := make([]byte, 8)
			rand.Read(b)
			*id = "cli-" + hex.EncodeToString(b)
		}
		if *until == "" {
			*until = time.Now().Add(*forDur).UTC().Format(time.RFC3339)
		}
		name, cmdArgs = "hold", map[string]any{"id": *id, "camera": *camera, "start": *start, "end": *end, "until": *until}
	}
	// The box's own rules, checked here first.
	b, err := msgpack.Marshal(cmdArgs)
	if err == nil && name == "hold" {
		_, err = hold.ParseArgs(b, time.Now())
	} else if err == nil {
		_, err = hold.ParseReleaseArgs(b)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	_, op, err := connectOperator(ctx, *dir, *broker, operator.Options{})
	if err != nil {
		return err
	}
	defer op.Close()
	r, err := op.Command(ctx, pos[0], name, cmdArgs, 30*time.Second)
	if err != nil {
		return err
	}
	if !r.OK {
		return fmt.Errorf("%s refused %s: %s", pos[0], name, r.Error)
	}
	fmt.Fprintf(stdout, "%s: %s %s\n", pos[0], name, wire.DescribeRaw(r.Result))
	return nil
}
