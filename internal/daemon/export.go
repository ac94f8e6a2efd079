package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/access"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/recorder/export"
)

// Exports: the "export", "clip" and "snapshot" commands upload recorded
// video to a URL the fleet signed. They run in recorder/export; this file
// checks the command against the camera's modes, reports progress as
// "export" events and audits refusals and finished uploads.

// newExporter makes the recorder's exporter and holds the segments of the
// jobs a restart interrupted, before retention's first pass.
func (d *daemon) newExporter(r *recording, log *slog.Logger) *export.Exporter {
	client := d.o.ExportClient
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil
		if d.cfg.Cloud.Proxy != "" { // the way out the cloud link takes
			if p, err := url.Parse(d.cfg.Cloud.Proxy); err == nil {
				tr.Proxy = http.ProxyURL(p)
			}
		}
		client = &http.Client{Transport: tr}
	}
	log = log.With("component", "export")
	e := &export.Exporter{
		Store: d.st, Index: r.ix, Root: r.root, Holds: &r.holds,
		Up:    &export.Uploader{Client: client, GiveUp: 24 * time.Hour, Log: log},
		Allow: func(j export.Job) error { return d.allowExport(j.Kind, j.Camera) },
		Log:   log,
	}
	e.Progress = func(ev export.Event) { d.exportProgress(ev) }
	if _, err := e.Load(); err != nil {
		log.Error("export jobs not loaded", "err", err)
	}
	return e
}

// allowExport applies the camera's modes to a cloud upload: every cloud
// path is off-site, so on-prem and recording-only cameras are refused. A
// snapshot is a current still taken from the recording: both the live
// and the recorded mode must let it out.
func (d *daemon) allowExport(kind, camera string) error {
	if !d.rec.known(camera) {
		return fmt.Errorf("unknown camera %q", camera)
	}
	g := Grant{Path: access.PathCloudExport, Action: tokens.ActionExport, Camera: camera}
	switch kind {
	case "clip":
		g.Path = access.PathCloudClip
	case "snapshot":
		g.Path = access.PathCloudSnapshot
		if err := d.decide(g, ""); err != nil { // recorded video (the latest closed segment)
			return err
		}
		g.Action = tokens.ActionLive // and a view of the present
	}
	return d.decide(g, "")
}

// handleExport starts an "export", "clip" or "snapshot" command (its
// progress arrives as "export" events), or stops one (export.cancel).
func (c *cloud) handleExport(ctx context.Context, env wire.Envelope, cmd wire.Command) wire.CommandResult {
	d := c.d
	if cmd.Name == "export.cancel" {
		id, err := export.ParseCancelArgs(cmd.Args)
		if err == nil && (d.rec == nil || d.rec.exp == nil) {
			err = export.ErrUnknownJob
		}
		if err == nil {
			err = d.rec.exp.Cancel(id)
		}
		if err != nil {
			return wire.CommandResult{Error: cmd.Name + ": " + err.Error()}
		}
		return okResult(map[string]any{"cancelling": true, "id": id})
	}
	var req export.Request
	var err error
	if cmd.Name == "snapshot" {
		var s export.SnapshotRequest
		if s, err = export.ParseSnapshotArgs(cmd.Args); err == nil {
			req = export.Request{ID: s.ID, Camera: s.Camera, URL: s.URL}
		}
	} else {
		req, err = export.ParseArgs(cmd.Args)
	}
	if err != nil {
		return wire.CommandResult{Error: cmd.Name + ": " + err.Error()}
	}
	if d.rec == nil || d.rec.exp == nil {
		return wire.CommandResult{Error: cmd.Name + ": the recorder is not running"}
	}
	if err := d.allowExport(cmd.Name, req.Camera); err != nil {
		d.audit(ctx, "cloud:"+env.ID.String(), cmd.Name+" "+req.ID, req.Camera, "cloud", "denied: "+err.Error())
		return wire.CommandResult{Error: cmd.Name + ": refused: " + err.Error()}
	}
	if cmd.Name == "snapshot" {
		if req.Start, req.Duration, err = d.rec.latestKeyRange(req.Camera); err != nil {
			return wire.CommandResult{Error: "snapshot: " + err.Error()}
		}
	}
	j, err := d.rec.exp.Submit(cmd.Name, req, time.Now())
	if err != nil {
		return wire.CommandResult{Error: cmd.Name + ": " + err.Error()}
	}
	res := map[string]any{"accepted": true, "id": j.ID, "segments": len(j.Recs)}
	if cmd.Name == "snapshot" {
		res["recorded_until"] = req.Start.Add(req.Duration).UTC().Format(time.RFC3339Nano)
	}
	return okResult(res)
}

// latestKeyRange is a range of the camera's newest closed segment whose
// clip (playback starts at the last key frame at or before the start) is
// its last GOP: the latest key frame and what follows it.
func (r *recording) latestKeyRange(camera string) (time.Time, time.Duration, error) {
	now := time.Now()
	recs, err := r.ix.List(camera, now.Add(-24*time.Hour), now.Add(time.Hour))
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("index: %w", err)
	}
	if len(recs) == 0 {
		return time.Time{}, 0, errors.New("nothing recorded in the last 24 hours")
	}
	end := recs[len(recs)-1].End()
	return end.Add(-time.Millisecond), time.Millisecond, nil
}

// exportProgress reports one export's phase as an "export" event, and
// audits its end.
func (d *daemon) exportProgress(ev export.Event) {
	ctx := context.Background()
	j := ev.Job
	attrs := map[string]string{"id": j.ID, "command": j.Kind, "camera": j.Camera, "phase": ev.Phase}
	if ev.Phase == export.PhaseUploading || ev.Phase == export.PhaseDone {
		attrs["percent"] = strconv.Itoa(ev.Percent)
	}
	if ev.Bytes > 0 {
		attrs["bytes"] = strconv.FormatInt(ev.Bytes, 10)
	}
	sev := wire.SeverityInfo
	switch ev.Phase {
	case export.PhaseFailed:
		attrs["reason"] = ev.Reason
		sev = wire.SeverityWarning
		d.audit(ctx, "cloud", j.Kind+" "+j.ID, j.Camera, export.Redact(j.URL), "failed: "+ev.Reason)
	case export.PhaseCancelled:
		d.audit(ctx, "cloud", j.Kind+" "+j.ID, j.Camera, export.Redact(j.URL), "cancelled")
	case export.PhaseDone:
		d.audit(ctx, "cloud", j.Kind+" "+j.ID, j.Camera, export.Redact(j.URL), "ok: uploaded "+strconv.FormatInt(ev.Bytes, 10)+" bytes")
	}
	if d.cloud != nil {
		d.cloud.event(ctx, "export", sev, j.Kind+" "+ev.Phase, attrs)
	}
}
