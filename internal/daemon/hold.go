package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/recorder/hold"
)

// Holds: the "hold" command keeps a camera's recordings in a time range
// from retention until it is released ("hold.release") or its "until"
// passes. They are kept in the store (recorder/hold); retention passes
// over what they cover, as it does over ranges under export.

// recordingHolds are the fleet's holds and a wake-up for their expiry.
type recordingHolds struct {
	set     *hold.Set
	changed chan struct{}
}

func openHolds(d *daemon) (*recordingHolds, error) {
	s, err := hold.Open(d.st, nil)
	if err != nil {
		return nil, err
	}
	return &recordingHolds{set: s, changed: make(chan struct{}, 1)}, nil
}

func (h *recordingHolds) poke() {
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// isHeld is the retention cleaner's Held: under export, or on hold.
func (r *recording) isHeld(camera string, start, end time.Time) bool {
	return r.holds.Held(camera, start, end) || r.held.set.Held(camera, start, end)
}

// expireHolds drops holds as their until passes, audits each, and asks
// retention for a pass over what they kept.
func (r *recording) expireHolds(ctx context.Context, log *slog.Logger) {
	for {
		wait := time.Minute
		if next := r.held.set.Next(); !next.IsZero() {
			wait = min(wait, max(time.Until(next), 0))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-r.held.changed:
			continue
		}
		gone, err := r.held.set.Expire()
		if err != nil {
			log.Error("holds: expiry", "err", err)
			continue
		}
		for _, h := range gone {
			log.Info("hold expired", "id", h.ID, "camera", h.Camera, "start", h.Start, "end", h.End)
			r.d.audit(ctx, "box", "hold "+h.ID+" expired", h.Camera, "box", "ok: "+holdSpan(h))
		}
		if len(gone) > 0 {
			r.cleaner.Kick()
		}
	}
}

func holdSpan(h hold.Hold) string {
	return h.Start.Format(time.RFC3339) + ".." + h.End.Format(time.RFC3339) + " until " + h.Until.Format(time.RFC3339)
}

// handleHold places a hold ("hold") or releases one ("hold.release").
func (c *cloud) handleHold(ctx context.Context, env wire.Envelope, cmd wire.Command) wire.CommandResult {
	d := c.d
	fail := func(err error) wire.CommandResult { return wire.CommandResult{Error: cmd.Name + ": " + err.Error()} }
	if d.rec == nil || d.rec.held == nil {
		return fail(errors.New("the recorder is not running"))
	}
	r := d.rec
	actor := "cloud:" + env.ID.String()
	if cmd.Name == "hold.release" {
		id, err := hold.ParseReleaseArgs(cmd.Args)
		if err != nil {
			return fail(err)
		}
		h, err := r.held.set.Release(id)
		if err != nil {
			return fail(err)
		}
		d.audit(ctx, actor, "hold.release "+id, h.Camera, "cloud", "ok: released "+holdSpan(h))
		r.held.poke()
		r.cleaner.Kick()
		return okResult(map[string]any{"released": true, "id": id})
	}
	h, err := hold.ParseArgs(cmd.Args, time.Now())
	if err != nil {
		return fail(err)
	}
	if !r.known(h.Camera) {
		// A camera taken out of the config may still have recordings.
		if cams, _ := r.ix.Cameras(); !slices.Contains(cams, h.Camera) {
			d.audit(ctx, actor, "hold "+h.ID, h.Camera, "cloud", "refused: unknown camera")
			return fail(fmt.Errorf("unknown camera %q", h.Camera))
		}
	}
	replaced, err := r.held.set.Put(h)
	if err != nil {
		d.audit(ctx, actor, "hold "+h.ID, h.Camera, "cloud", "refused: "+err.Error())
		return fail(err)
	}
	d.audit(ctx, actor, "hold "+h.ID, h.Camera, "cloud", "ok: "+holdSpan(h))
	r.held.poke()
	if replaced {
		r.cleaner.Kick() // the new range may keep less
	}
	recs, _ := r.ix.List(h.Camera, h.Start, h.End)
	return okResult(map[string]any{"held": true, "id": h.ID, "replaced": replaced, "segments": len(recs),
		"until": h.Until.Format(time.RFC3339)})
}
