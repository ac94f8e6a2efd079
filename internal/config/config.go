// Package config is outpostd's configuration: a JSON document with defaults,
// decoded strictly (an unknown field, a wrong type, a duplicate key or a
// missing required value is an error that names the field) and validated as a
// whole before anything else in the daemon runs. docs/config.md documents
// every field.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-gw/outpost/internal/access"
)

// CurrentVersion is the config_version this build understands.
const CurrentVersion = 1

// MaxSize bounds a config document; anything larger is refused unread.
const MaxSize = 1 << 20

// Config is the whole daemon configuration.
type Config struct {
	// ConfigVersion must be CurrentVersion; it lets a later build migrate or
	// refuse a document written for another schema.
	ConfigVersion int `json:"config_version" required:"true"`
	// LogLevel is one of debug, info, warn, error.
	LogLevel string   `json:"log_level"`
	LAN      LAN      `json:"lan"`
	Watchdog Watchdog `json:"watchdog"`
	Storage  Storage  `json:"storage"`
	Cloud    Cloud    `json:"cloud"`
	Recorder Recorder `json:"recorder"`
}

// Recorder configures camera recording.
type Recorder struct {
	Cameras []Camera `json:"cameras"`
	// SegmentDuration is the length of a recording file (cut at the next
	// key frame after it).
	SegmentDuration Duration `json:"segment_duration"`
	// PartDuration is how often recorded video is flushed and fsync'd: a
	// power cut loses at most this much.
	PartDuration Duration `json:"part_duration"`
	// MaxAge deletes recordings older than this; 0 keeps them while space
	// allows.
	MaxAge Duration `json:"max_age"`
	// BudgetMB caps recordings plus the cloud-link outbox (one storage
	// budget for the box); 0: no fixed cap.
	BudgetMB int64 `json:"budget_mb"`
	// MinFreeMB keeps this much of the volume free, deleting the oldest
	// recordings first.
	MinFreeMB int64 `json:"min_free_mb"`
	// LiveRTSPAddr is where cameras are restreamed to LAN viewers over RTSP
	// (rtsp://BOX:PORT/<camera>, a viewer token as password or ?token=);
	// empty turns it off.
	LiveRTSPAddr string `json:"live_rtsp_addr"`
}

// Camera is one RTSP camera.
type Camera struct {
	// ID names the camera in paths, APIs and recordings: [a-z0-9_-], ≤ 64.
	ID string `json:"id" required:"true"`
	// URL is rtsp://host[:port]/path (rtsps:// for TLS).
	URL string `json:"url" required:"true"`
	// Username and Password are sent to the camera, never logged.
	Username string `json:"username"`
	Password string `json:"password"`
	// Transport is "tcp" (default) or "udp".
	Transport string `json:"transport"`
	// Live is who may watch live video: "global" (default: anyone whose
	// viewer token grants it, wherever the request comes from), "on-prem"
	// (only from the site LAN) or "users" (only LiveUsers).
	Live      string   `json:"live"`
	LiveUsers []string `json:"live_users"`
	// Recorded is who may view or export recordings: "global" (default),
	// "on-prem" (only from the site LAN; no cloud export or clip) or
	// "recording-only" (kept, viewed and exported by nobody).
	Recorded string `json:"recorded"`
}

// Policy is the camera's on-premise modes.
func (c Camera) Policy() access.Policy {
	return access.Policy{Live: c.Live, LiveUsers: c.LiveUsers, Recorded: c.Recorded}
}

// Cloud configures the link to the fleet (the broker itself comes from the
// fleet file).
type Cloud struct {
	// Proxy is the site's HTTP CONNECT proxy, http://[user:password@]host:port;
	// empty: connect directly.
	Proxy string `json:"proxy"`
	// TelemetryInterval between health reports.
	TelemetryInterval Duration `json:"telemetry_interval"`
	// OutboxBudgetMB bounds what waits for the broker while offline; beyond
	// it telemetry is dropped first, audit last.
	OutboxBudgetMB int `json:"outbox_budget_mb"`
	// RenewAfter is the age at which the box gets a new key and certificate
	// (also when its certificate expires within that span).
	RenewAfter Duration `json:"renew_after"`
	// DataAlertMBPerDay raises a data_usage event once a day when the link
	// has moved more than this many MB (up and down) that day; 0: off. Push
	// it to a group to set a group's threshold.
	DataAlertMBPerDay int `json:"data_alert_mb_per_day"`
	// UpdateHealthWindow is how long a trial-booted update has to pass its
	// health gate (link online, recorder writing) before the box falls back.
	UpdateHealthWindow Duration `json:"update_health_window"`
}

// LAN configures the endpoint that people on the site's network use.
type LAN struct {
	// HTTPSAddr is where the LAN endpoint listens for HTTPS.
	HTTPSAddr string `json:"https_addr"`
	// HTTPAddr serves only a redirect to HTTPS; empty turns it off.
	HTTPAddr string `json:"http_addr"`
	// Hostnames go into the self-signed certificate besides the box's
	// addresses.
	Hostnames []string `json:"hostnames"`
	// SiteSubnets are the networks that count as the site LAN for cameras
	// in on-prem mode (CIDR prefixes). Empty: the subnets of the box's own
	// network interfaces, without loopback and tunnels.
	SiteSubnets []string `json:"site_subnets"`
}

// Watchdog configures the hardware watchdog.
type Watchdog struct {
	// Device is the watchdog character device; absent means not petted.
	Device string `json:"device"`
	// Interval between pets; must be well below the hardware timeout.
	Interval Duration `json:"interval"`
	// Disabled leaves the watchdog alone even where it exists.
	Disabled bool `json:"disabled"`
}

// Storage configures the data volume.
type Storage struct {
	// GrowPerm grows /perm to fill the card or SSD on first boot (appliance
	// only; ignored when the data dir is not on gokrazy's /perm).
	GrowPerm bool `json:"grow_perm"`
}

// Default is the configuration used when no file is given, and the base that
// a file overrides.
func Default() Config {
	return Config{
		ConfigVersion: CurrentVersion,
		LogLevel:      "info",
		LAN: LAN{
			HTTPSAddr: ":443",
			HTTPAddr:  ":80",
			Hostnames: []string{"outpost", "outpost.local"},
		},
		Watchdog: Watchdog{Device: "/dev/watchdog", Interval: Duration(10 * time.Second)},
		Storage:  Storage{GrowPerm: true},
		Cloud:    Cloud{TelemetryInterval: Duration(time.Minute), OutboxBudgetMB: 64, RenewAfter: Duration(7 * 24 * time.Hour), UpdateHealthWindow: Duration(5 * time.Minute)},
		Recorder: Recorder{SegmentDuration: Duration(time.Minute), PartDuration: Duration(time.Second), MinFreeMB: 1024, LiveRTSPAddr: ":8554"},
	}
}

// Duration is a time.Duration written as a Go duration string ("10s").
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string like \"10s\", got %s", kindOf(b))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration string like \"10s\": %w", err)
	}
	*d = Duration(v)
	return nil
}

// FieldError names the field that is wrong.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return fmt.Sprintf("field %q: %v", e.Field, e.Err) }
func (e *FieldError) Unwrap() error { return e.Err }

// Sentinel reasons, for errors.Is.
var (
	ErrUnknownField = errors.New("unknown field")
	ErrMissing      = errors.New("required value missing")
	ErrWrongType    = errors.New("wrong type")
	ErrInvalid      = errors.New("invalid value")
)

// Load reads and parses a config file. The error is one line naming the file
// and the field.
func Load(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return Config{}, fmt.Errorf("config %s: larger than %d bytes", path, MaxSize)
	}
	c, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a config document over the defaults and validates it.
func Parse(b []byte) (Config, error) {
	if len(b) > MaxSize {
		return Config{}, fmt.Errorf("larger than %d bytes", MaxSize)
	}
	c := Default()
	if err := decodeStrict(bytes.TrimSpace(b), reflect.ValueOf(&c).Elem(), ""); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks values that decode fine but make no sense.
func (c Config) Validate() error {
	if c.ConfigVersion != CurrentVersion {
		return &FieldError{"config_version", fmt.Errorf("%w: %d, this build understands %d", ErrInvalid, c.ConfigVersion, CurrentVersion)}
	}
	if _, err := c.SlogLevel(); err != nil {
		return &FieldError{"log_level", err}
	}
	if err := checkAddr(c.LAN.HTTPSAddr, false); err != nil {
		return &FieldError{"lan.https_addr", err}
	}
	if err := checkAddr(c.LAN.HTTPAddr, true); err != nil {
		return &FieldError{"lan.http_addr", err}
	}
	if _, err := access.ParsePrefixes(c.LAN.SiteSubnets); err != nil {
		return &FieldError{"lan.site_subnets", fmt.Errorf("%w: %v", ErrInvalid, err)}
	}
	for i, h := range c.LAN.Hostnames {
		if h == "" || strings.ContainsAny(h, " /:") {
			return &FieldError{fmt.Sprintf("lan.hostnames[%d]", i), fmt.Errorf("%w: %q is not a host name", ErrInvalid, h)}
		}
	}
	if !c.Watchdog.Disabled {
		if c.Watchdog.Device == "" {
			return &FieldError{"watchdog.device", fmt.Errorf("%w: empty (set watchdog.disabled instead)", ErrInvalid)}
		}
		if d := c.Watchdog.Interval.D(); d < 100*time.Millisecond || d > time.Minute {
			return &FieldError{"watchdog.interval", fmt.Errorf("%w: %v is outside 100ms..1m", ErrInvalid, d)}
		}
	}
	if c.Cloud.Proxy != "" {
		u, err := url.Parse(c.Cloud.Proxy)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return &FieldError{"cloud.proxy", fmt.Errorf("%w: want http://[user:password@]host:port", ErrInvalid)}
		}
	}
	if d := c.Cloud.TelemetryInterval.D(); d < time.Second || d > 24*time.Hour {
		return &FieldError{"cloud.telemetry_interval", fmt.Errorf("%w: %v is outside 1s..24h", ErrInvalid, d)}
	}
	if d := c.Cloud.RenewAfter.D(); d < time.Second || d > 365*24*time.Hour {
		return &FieldError{"cloud.renew_after", fmt.Errorf("%w: %v is outside 1s..8760h", ErrInvalid, d)}
	}
	if d := c.Cloud.UpdateHealthWindow.D(); d < 10*time.Second || d > time.Hour {
		return &FieldError{"cloud.update_health_window", fmt.Errorf("%w: %v is outside 10s..1h", ErrInvalid, d)}
	}
	if c.Cloud.DataAlertMBPerDay < 0 {
		return &FieldError{"cloud.data_alert_mb_per_day", fmt.Errorf("%w: negative", ErrInvalid)}
	}
	if err := c.Recorder.validate(); err != nil {
		return err
	}
	if b := c.Cloud.OutboxBudgetMB; b < 1 || b > 1<<20 {
		return &FieldError{"cloud.outbox_budget_mb", fmt.Errorf("%w: %d is outside 1..1048576", ErrInvalid, b)}
	}
	return nil
}

// SlogLevel maps LogLevel to a slog.Level.
func (c Config) SlogLevel() (slog.Level, error) {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%w: %q, want debug, info, warn or error", ErrInvalid, c.LogLevel)
}

func checkAddr(addr string, emptyOK bool) error {
	if addr == "" {
		if emptyOK {
			return nil
		}
		return fmt.Errorf("%w: empty", ErrMissing)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %q is not host:port", ErrInvalid, addr)
	}
	if host != "" && net.ParseIP(host) == nil && strings.ContainsAny(host, " /") {
		return fmt.Errorf("%w: bad host in %q", ErrInvalid, addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%w: bad port in %q", ErrInvalid, addr)
	}
	return nil
}

var cameraID = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

func (r Recorder) validate() error {
	if d := r.SegmentDuration.D(); d < time.Second || d > time.Hour {
		return &FieldError{"recorder.segment_duration", fmt.Errorf("%w: %v is outside 1s..1h", ErrInvalid, d)}
	}
	if d := r.PartDuration.D(); d < 100*time.Millisecond || d > 10*time.Second || d > r.SegmentDuration.D() {
		return &FieldError{"recorder.part_duration", fmt.Errorf("%w: %v is outside 100ms..10s or longer than a segment", ErrInvalid, d)}
	}
	if err := checkAddr(r.LiveRTSPAddr, true); err != nil {
		return &FieldError{"recorder.live_rtsp_addr", err}
	}
	if r.MaxAge < 0 || r.BudgetMB < 0 || r.MinFreeMB < 0 {
		return &FieldError{"recorder", fmt.Errorf("%w: max_age, budget_mb and min_free_mb cannot be negative", ErrInvalid)}
	}
	seen := map[string]bool{}
	for i, cam := range r.Cameras {
		field := func(f string) string { return fmt.Sprintf("recorder.cameras[%d].%s", i, f) }
		if !cameraID.MatchString(cam.ID) {
			return &FieldError{field("id"), fmt.Errorf("%w: %q, want [a-z0-9_-], up to 64", ErrInvalid, cam.ID)}
		}
		if seen[cam.ID] {
			return &FieldError{field("id"), fmt.Errorf("%w: %q used twice", ErrInvalid, cam.ID)}
		}
		seen[cam.ID] = true
		u, err := url.Parse(cam.URL)
		if err != nil || (u.Scheme != "rtsp" && u.Scheme != "rtsps") || u.Host == "" {
			return &FieldError{field("url"), fmt.Errorf("%w: want rtsp://host[:port]/path", ErrInvalid)}
		}
		if cam.Transport != "" && cam.Transport != "tcp" && cam.Transport != "udp" {
			return &FieldError{field("transport"), fmt.Errorf("%w: %q, want tcp or udp", ErrInvalid, cam.Transport)}
		}
		if err := (access.Policy{Live: cam.Live, LiveUsers: cam.LiveUsers}).Validate(); err != nil {
			return &FieldError{field("live"), fmt.Errorf("%w: %v", ErrInvalid, err)}
		}
		if err := (access.Policy{Recorded: cam.Recorded}).Validate(); err != nil {
			return &FieldError{field("recorded"), fmt.Errorf("%w: %v", ErrInvalid, err)}
		}
	}
	return nil
}
