package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/outpost-gw/outpost/internal/access"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/export"
	"github.com/outpost-gw/outpost/recorder/hls"
	"github.com/outpost-gw/outpost/recorder/index"
	"github.com/outpost-gw/outpost/recorder/ingest"
	"github.com/outpost-gw/outpost/recorder/live"
	"github.com/outpost-gw/outpost/recorder/retention"
	"github.com/outpost-gw/outpost/recorder/segment"
)

// recording runs the configured cameras: ingest → segment writer → index.
type recording struct {
	d       *daemon
	root    string // recordings root in the data dir
	ix      *index.Index
	cams    []*camera
	cleaner *retention.Cleaner
	live    *live.Server // RTSP restream; nil when off
	holds   export.Holds // ranges under export: retention passes them over
	hls     *hls.Server  // HLS for the LAN page
	exp     *export.Exporter
	held    *recordingHolds // the fleet's holds (hold.go)
}

type camera struct {
	id     string
	ingest *ingest.Camera
	writer *segment.Writer
}

// setupRecording repairs what a power cut left half-written, rebuilds the
// index from the files, and prepares one pipeline per camera.
func (d *daemon) setupRecording() (*recording, error) {
	r := &recording{d: d, root: filepath.Join(d.o.DataDir, "recordings"), ix: index.New(d.st)}
	log := d.log.With("component", "recorder")
	if err := os.MkdirAll(r.root, 0o700); err != nil {
		return nil, fmt.Errorf("recordings: %w", err)
	}
	r.reindex(log)
	var err error
	if r.held, err = openHolds(d); err != nil {
		return nil, fmt.Errorf("recording holds: %w", err)
	}
	rc := d.cfg.Recorder
	r.cleaner = &retention.Cleaner{
		Root: r.root, Index: r.ix, Disk: d.o.Sensors.Disk,
		MaxAge: rc.MaxAge.D(), BudgetBytes: rc.BudgetMB << 20, MinFreeBytes: rc.MinFreeMB << 20,
		Held: r.isHeld,
		Log:  log.With("component", "retention"),
	}
	if d.cloud != nil {
		ob := d.cloud.ob
		r.cleaner.OtherBytes = func() int64 {
			s, err := ob.Stats()
			if err != nil {
				return 0
			}
			return s.TotalBytes
		}
	}
	r.hls = hls.New(hls.Config{Log: log.With("component", "hls")})
	r.exp = d.newExporter(r, log)
	if r.live, err = d.startLive(); err != nil {
		// Recording matters more than live viewing: carry on without it.
		log.Error("live restream off", "err", err)
		r.live = nil
	}
	logins, err := d.takeCameraLogins() // d.cfg keeps the cameras without them
	if err != nil {
		return nil, err
	}
	for _, cc := range d.cfg.Recorder.Cameras {
		w, err := segment.New(segment.Config{
			Dir:             r.root,
			Camera:          cc.ID,
			SegmentDuration: d.cfg.Recorder.SegmentDuration.D(),
			PartDuration:    d.cfg.Recorder.PartDuration.D(),
			Logger:          log.With("camera", cc.ID),
			OnSegment: func(info segment.SegmentInfo) {
				rec, err := r.add(info)
				if err != nil {
					log.Error("indexing a segment", "file", info.Path, "err", err)
					return
				}
				r.cleaner.Added(rec)
				r.cleaner.Kick() // a pass per closed segment: cheap, and space is freed as it is used
			},
		})
		if err != nil {
			return nil, fmt.Errorf("camera %s: %w", cc.ID, err)
		}
		// One camera connection feeds the recording and the live viewers.
		sink := live.Tee{w, r.hls.Stream(cc.ID)}
		if r.live != nil {
			sink = append(sink, r.live.Stream(cc.ID))
		}
		in, err := ingest.New(ingest.Config{
			ID: cc.ID, URL: cc.URL, Username: logins[cc.ID].Username, Password: logins[cc.ID].Password, Transport: cc.Transport,
			Sink: sink, Log: log,
		})
		if err != nil {
			return nil, fmt.Errorf("camera %s: %w", cc.ID, err)
		}
		r.cams = append(r.cams, &camera{id: cc.ID, ingest: in, writer: w})
	}
	return r, nil
}

func (r *recording) add(info segment.SegmentInfo) (index.Recording, error) {
	rec, err := r.entry(info)
	if err != nil {
		return rec, err
	}
	return rec, r.ix.Add(rec)
}

// entry is info's index entry, its file relative to the recordings root.
func (r *recording) entry(info segment.SegmentInfo) (index.Recording, error) {
	rel, err := filepath.Rel(r.root, info.Path)
	if err != nil || strings.HasPrefix(rel, "..") {
		return index.Recording{}, fmt.Errorf("segment %s outside the recordings root", info.Path)
	}
	codecs := make([]string, len(info.Codecs))
	for i, c := range info.Codecs {
		codecs[i] = string(c)
	}
	return index.Recording{Camera: info.Camera, File: rel, Start: info.Start, Duration: info.Duration, Bytes: info.Bytes, Codecs: codecs}, nil
}

// run runs every camera until ctx ends; the open segments are closed (and
// indexed) on the way out.
func (r *recording) run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.cleaner.Run(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); r.exp.Run(ctx) }()
	wg.Add(1)
	go func() { defer wg.Done(); r.expireHolds(ctx, r.d.log.With("component", "recorder")) }()
	for _, c := range r.cams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.ingest.Run(ctx) // ends the writer's open segment on its way out
		}()
	}
	wg.Wait()
	r.hls.Close()
	if r.live != nil {
		r.live.Close()
	}
	return nil
}

// CameraHealth is one camera's ingest state, in GET /api/v1/status.
type CameraHealth struct {
	ID           string    `json:"id"`
	State        string    `json:"state"`
	FPS          float64   `json:"fps"`
	BitrateBPS   float64   `json:"bitrate_bps"`
	LastKeyFrame time.Time `json:"last_key_frame,omitzero"`
	Reconnects   uint64    `json:"reconnects"`
	Frames       uint64    `json:"frames"`
	LastError    string    `json:"last_error,omitempty"`
}

// CameraStatus is one camera in GET /api/v1/cameras: its health and what
// this viewer may do with it from where they are.
type CameraStatus struct {
	CameraHealth
	CanLive     bool `json:"can_live"`
	CanPlayback bool `json:"can_playback"`
	CanExport   bool `json:"can_export"` // download clips
}

func (r *recording) cameras() []CameraHealth {
	var out []CameraHealth
	for _, c := range r.cams {
		s := c.ingest.Stats()
		out = append(out, CameraHealth{ID: c.id, State: string(s.State), FPS: s.FPS, BitrateBPS: s.Bitrate,
			LastKeyFrame: s.LastKeyFrame, Reconnects: s.Reconnects, Frames: s.Frames, LastError: s.LastError})
	}
	return out
}

func (r *recording) known(id string) bool {
	for _, c := range r.cams {
		if c.id == id {
			return true
		}
	}
	return false
}

// maxListRange bounds one listing request.
const maxListRange = 31 * 24 * time.Hour

// handleCameras lists the cameras the viewer's token names, each with
// what the viewer may do with it from where they are (token and modes).
func (d *daemon) handleCameras(w http.ResponseWriter, req *http.Request) {
	claims, _ := req.Context().Value(claimsKey{}).(tokens.Claims)
	out := []CameraStatus{}
	for _, h := range d.rec.cameras() {
		c := CameraStatus{CameraHealth: h}
		if claims.Grants(c.ID, tokens.ActionLive) != nil && claims.Grants(c.ID, tokens.ActionPlayback) != nil {
			continue
		}
		g := Grant{Path: access.PathLAN, Camera: c.ID, Remote: access.RemoteAddr(req.RemoteAddr)}
		g.Action = tokens.ActionLive
		c.CanLive = claims.Grants(c.ID, g.Action) == nil && d.decide(g, claims.User) == nil
		g.Action = tokens.ActionPlayback
		c.CanPlayback = claims.Grants(c.ID, g.Action) == nil && d.decide(g, claims.User) == nil
		g.Action = tokens.ActionExport
		c.CanExport = claims.Grants(c.ID, g.Action) == nil && d.decide(g, claims.User) == nil
		out = append(out, c)
	}
	writeJSON(w, map[string]any{"cameras": out})
}

// handleRecordings answers GET /api/v1/recordings?camera=ID&start=&end=
// with the segments and the spans of continuous recording (gaps between).
func (d *daemon) handleRecordings(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	cam := q.Get("camera")
	if !d.rec.known(cam) {
		httpError(w, http.StatusNotFound, "unknown camera %q", cam)
		return
	}
	start, err1 := time.Parse(time.RFC3339, q.Get("start"))
	end, err2 := time.Parse(time.RFC3339, q.Get("end"))
	if err1 != nil || err2 != nil || !end.After(start) || end.Sub(start) > maxListRange {
		httpError(w, http.StatusBadRequest, "start and end must be RFC 3339 times, end after start, at most %v apart", maxListRange)
		return
	}
	recs, err := d.rec.ix.List(cam, start, end)
	if err != nil {
		httpError(w, http.StatusInternalServerError, "index: %v", err)
		return
	}
	type item struct {
		Start    time.Time `json:"start"`
		End      time.Time `json:"end"`
		Bytes    int64     `json:"bytes"`
		Codecs   []string  `json:"codecs"`
		Duration float64   `json:"duration_s"`
	}
	items := make([]item, 0, len(recs))
	for _, r := range recs {
		items = append(items, item{Start: r.Start, End: r.End(), Bytes: r.Bytes, Codecs: r.Codecs, Duration: r.Duration.Seconds()})
	}
	spans := index.Spans(recs, 2*d.cfg.Recorder.PartDuration.D())
	if spans == nil {
		spans = []index.Span{}
	}
	writeJSON(w, map[string]any{"camera": cam, "segments": items, "spans": spans})
}

func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	writeJSON(w, map[string]string{"error": fmt.Sprintf(format, args...)})
}

var _ recorder.Sink = (*segment.Writer)(nil)
