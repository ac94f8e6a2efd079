package daemon

import (
	"net/http"
	"strings"
	"time"

	"github.com/outpost-gw/outpost/internal/access"
	"github.com/outpost-gw/outpost/internal/buildinfo"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/internal/webui"
	"github.com/outpost-gw/outpost/ota/install"
	"github.com/outpost-gw/outpost/recorder/playback"
)

// Health is the body of GET /healthz.
type Health struct {
	Version string `json:"version"`
	UptimeS int64  `json:"uptime_s"`
	BootID  string `json:"boot_id"`
}

// Status is the body of GET /api/v1/status: what an installer checks.
type Status struct {
	Version string `json:"version"`
	Board   string `json:"board"`
	Fleet   string `json:"fleet,omitempty"`
	UptimeS int64  `json:"uptime_s"`
	// BootCount counts starts of the daemon on this data dir.
	BootCount uint64  `json:"boot_count"`
	Watchdog  string  `json:"watchdog"`
	DataDir   Disk    `json:"data_disk"`
	MemTotal  uint64  `json:"mem_total_bytes"`
	MemAvail  uint64  `json:"mem_available_bytes"`
	TempC     float64 `json:"temperature_c,omitempty"`
	Load1     float64 `json:"load1"`
	// Cloud is the fleet link, absent without a fleet.
	Cloud *CloudStatus `json:"cloud,omitempty"`
	// Time is the box's clock: an installer sees at a glance whether it
	// is set.
	Time time.Time `json:"time"`
	// Cameras is each camera's health (no video: that needs a token).
	Cameras   []CameraHealth   `json:"cameras"`
	Recording *RecordingStatus `json:"recording,omitempty"`
	// Update is the OTA installer's state, absent when it never ran.
	Update *UpdateStatus `json:"update,omitempty"`
}

// RecordingStatus is the retention window and what bounds it.
type RecordingStatus struct {
	Oldest       time.Time `json:"oldest,omitzero"`
	WindowS      float64   `json:"window_s"` // from Oldest to now
	Bytes        int64     `json:"bytes"`
	BudgetBytes  int64     `json:"budget_bytes,omitempty"`
	MinFreeBytes int64     `json:"min_free_bytes,omitempty"`
	MaxAgeS      float64   `json:"max_age_s,omitempty"`
}

// UpdateStatus is the firmware update state.
type UpdateStatus struct {
	Phase   string `json:"phase"`
	Version uint64 `json:"version,omitempty"`
	Floor   uint64 `json:"floor,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// CloudStatus is what an installer needs about the fleet link.
type CloudStatus struct {
	DeviceID  string `json:"device_id"`
	ClaimCode string `json:"claim_code,omitempty"` // until enrolled
	Enrolled  bool   `json:"enrolled"`
	State     string `json:"state"`
	LastError string `json:"last_error,omitempty"`
	Outbox    int64  `json:"outbox_depth"`
}

// Disk is a file system's size.
type Disk struct {
	TotalBytes uint64 `json:"total_bytes"`
	AvailBytes uint64 `json:"avail_bytes"`
}

func (d *daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", d.handleHealthz)
	mux.HandleFunc("GET /api/v1/status", d.installerView(d.handleStatus))
	mux.HandleFunc("GET /api/v1/cameras", d.viewer(tokens.ActionLive, d.handleCameras))
	mux.HandleFunc("GET /api/v1/recordings", d.viewer(tokens.ActionPlayback, d.handleRecordings))
	video := playback.Handler(d.rec.ix, d.rec.root, d.rec.known, d.log.With("component", "playback"))
	mux.HandleFunc("GET /api/v1/recordings/video", d.viewer(tokens.ActionPlayback, video.ServeHTTP))
	mux.HandleFunc("GET /api/v1/recordings/clip", d.viewer(tokens.ActionExport, attachment(video).ServeHTTP))
	mux.HandleFunc("GET /api/v1/live/{camera}/{file}", d.viewerOn(access.PathHLS, tokens.ActionLive, cameraFromPath, d.handleHLS))
	mux.HandleFunc("POST /api/v1/session", d.handleSignIn)
	mux.HandleFunc("DELETE /api/v1/session", d.handleSignOut)
	mux.HandleFunc("GET /api/v1/session", d.handleSession)
	mux.HandleFunc("POST /api/v1/update", d.lanUpdate())
	page := webui.Handler()
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /assets/", page)
	return d.lockoutGate(d.csrf(mux))
}

func (d *daemon) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, Health{
		Version: buildinfo.Version,
		UptimeS: int64(time.Since(d.started).Seconds()),
		BootID:  d.bootID,
	})
}

func (d *daemon) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, d.status())
}

func (d *daemon) status() Status {
	s := Status{
		Version:   buildinfo.Version,
		Board:     d.board.String(),
		UptimeS:   int64(time.Since(d.started).Seconds()),
		Watchdog:  string(d.petter.State()),
		BootCount: d.boot.Count,
	}
	if d.fleet != nil {
		s.Fleet = d.fleet.Name
	}
	if du, err := d.o.Sensors.Disk(d.o.DataDir); err == nil {
		s.DataDir = Disk{TotalBytes: du.TotalBytes, AvailBytes: du.AvailBytes}
	}
	if m, err := d.o.Sensors.Memory(); err == nil {
		s.MemTotal, s.MemAvail = m.TotalBytes, m.AvailableBytes
	}
	if t, err := d.o.Sensors.Temperature(); err == nil {
		s.TempC = t
	}
	if l, err := d.o.Sensors.Load(); err == nil {
		s.Load1 = l.One
	}
	s.Time = time.Now().UTC()
	s.Cameras = []CameraHealth{}
	if d.rec != nil {
		s.Cameras = append(s.Cameras, d.rec.cameras()...)
		rc := d.cfg.Recorder
		rs := &RecordingStatus{BudgetBytes: rc.BudgetMB << 20, MinFreeBytes: rc.MinFreeMB << 20, MaxAgeS: rc.MaxAge.D().Seconds()}
		if old, err := d.rec.ix.Oldest(1); err == nil && len(old) > 0 {
			rs.Oldest = old[0].Start.UTC()
			rs.WindowS = s.Time.Sub(rs.Oldest).Seconds()
		}
		rs.Bytes = d.rec.cleaner.Last().Bytes
		s.Recording = rs
	}
	if st, err := (&install.Installer{Store: d.st}).Load(); err == nil && (st.Phase != "" || st.Floor != 0) {
		s.Update = &UpdateStatus{Phase: string(st.Phase), Version: st.Version, Floor: st.Floor, Reason: st.Reason}
	}
	if c := d.cloud; c != nil {
		cs := &CloudStatus{DeviceID: c.id.DeviceID(), Enrolled: c.id.Enrolled(), State: "enrolling"}
		if !cs.Enrolled {
			cs.ClaimCode = c.id.ClaimCode()
		}
		if l := c.link.Load(); l != nil {
			st := l.Stats()
			cs.State, cs.LastError = string(st.State), st.LastError
		}
		if obs, err := c.ob.Stats(); err == nil {
			for _, x := range obs.Streams {
				cs.Outbox += x.Depth
			}
		}
		s.Cloud = cs
	}
	return s
}

// attachment serves h's response as a download (Content-Disposition:
// attachment) instead of inline.
func attachment(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&dispositionWriter{ResponseWriter: w}, r)
	})
}

type dispositionWriter struct {
	http.ResponseWriter
	done bool
}

func (w *dispositionWriter) WriteHeader(code int) {
	if !w.done {
		w.done = true
		if v, ok := strings.CutPrefix(w.Header().Get("Content-Disposition"), "inline"); ok {
			w.Header().Set("Content-Disposition", "attachment"+v)
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *dispositionWriter) Write(p []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

func (w *dispositionWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
