package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/recorder/export"
)

// runFleetExport asks a box to upload a clip (or a snapshot) to a
// resumable upload session URL, and follows the job's progress events.
func runFleetExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fleet export", stderr)
	dir := fleetDirFlag(fs)
	broker := fs.String("broker", "", "broker URL (default: the fleet file's)")
	camera := fs.String("camera", "", "camera id")
	start := fs.String("start", "", "start of the clip, RFC 3339 (not with --snapshot)")
	dur := fs.Duration("duration", time.Minute, "length of the clip, whole seconds, at most 1h")
	uploadURL := fs.String("url", "", "https URL of a resumable upload session (e.g. a GCS resumable upload)")
	id := fs.String("id", "", "export id (default: random)")
	snapshot := fs.Bool("snapshot", false, "upload the camera's latest key frame (one GOP) instead of a clip")
	wait := fs.Duration("wait", 2*time.Hour, "how long to follow the progress (0: do not)")
	cancelID := fs.String("cancel", "", "stop the export with this id instead")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if *cancelID != "" {
		_, op, err := connectOperator(ctx, *dir, *broker, operator.Options{})
		if err != nil {
			return err
		}
		defer op.Close()
		r, err := op.Command(ctx, pos[0], "export.cancel", map[string]any{"id": *cancelID}, 30*time.Second)
		if err != nil {
			return err
		}
		if !r.OK {
			return fmt.Errorf("%s refused export.cancel: %s", pos[0], r.Error)
		}
		fmt.Fprintf(stdout, "%s: cancelling %s\n", pos[0], *cancelID)
		return nil
	}
	if *camera == "" || *uploadURL == "" {
		return fmt.Errorf("%w: --camera and --url are required", errUsage)
	}
	if err := export.CheckURL(*uploadURL); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *id == "" {
		b := make([]byte, 8)
		rand.Read(b)
		*id = "cli-" + hex.EncodeToString(b)
	}
	name, cmdArgs := "snapshot", map[string]any{"id": *id, "camera": *camera, "url": *uploadURL}
	if !*snapshot {
		t, err := time.Parse(time.RFC3339, *start)
		if err != nil {
			return fmt.Errorf("%w: --start: %v", errUsage, err)
		}
		if *dur < time.Second || *dur > export.MaxDuration || *dur%time.Second != 0 {
			return fmt.Errorf("%w: --duration %v: whole seconds, 1s..%v", errUsage, *dur, export.MaxDuration)
		}
		name = "export"
		cmdArgs["start"], cmdArgs["duration_s"] = t.UTC().Format(time.RFC3339), int64(*dur/time.Second)
	}
	_, op, err := connectOperator(ctx, *dir, *broker, operator.Options{})
	if err != nil {
		return err
	}
	defer op.Close()
	events := make(chan wire.Event, 64)
	op.Subscribe(func(m operator.Message) {
		var ev wire.Event
		if m.Device != pos[0] || m.Stream != "event" || wire.DecodeBody(m.Env, &ev, wire.DefaultLimits()) != nil ||
			ev.Kind != "export" || ev.Attrs["id"] != *id {
			return
		}
		select {
		case events <- ev:
		default: // a slow terminal drops progress lines, not the link
		}
	})
	r, err := op.Command(ctx, pos[0], name, cmdArgs, 30*time.Second)
	if err != nil {
		return err
	}
	if !r.OK {
		return fmt.Errorf("%s refused %s: %s", pos[0], name, r.Error)
	}
	fmt.Fprintf(stdout, "%s: %s %s accepted %s\n", pos[0], name, *id, wire.DescribeRaw(r.Result))
	if *wait <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s: no end within %v (it goes on on the box)", name, *id, *wait)
		case ev := <-events:
			line := ev.Attrs["phase"]
			if p := ev.Attrs["percent"]; p != "" {
				line += " " + p + "%"
			}
			if b := ev.Attrs["bytes"]; b != "" {
				line += " of " + b + " bytes"
			}
			fmt.Fprintf(stdout, "%s %s: %s\n", time.Now().Format(time.TimeOnly), *id, line)
			switch ev.Attrs["phase"] {
			case export.PhaseDone:
				return nil
			case export.PhaseFailed:
				return fmt.Errorf("%s %s failed: %s", name, *id, ev.Attrs["reason"])
			case export.PhaseCancelled:
				return fmt.Errorf("%s %s was cancelled", name, *id)
			}
		}
	}
}
