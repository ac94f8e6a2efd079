package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/outpost-gw/outpost/cloudlink"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/buildinfo"
	"github.com/outpost-gw/outpost/internal/trustclock"
	"github.com/outpost-gw/outpost/ota/install"
	"github.com/outpost-gw/outpost/ota/manifest"
)

// failHealthGate, set at build time (-ldflags -X), makes every health gate
// fail: an image that must roll back, for the VM test of the fallback.
var failHealthGate string

// TrialGuard is told when a trial boot's health gate has decided, and how
// long the gate may take (ota/trialguard.Guard).
type TrialGuard interface {
	Done()
	Extend(time.Duration)
}

// updateArgs is the "update" command's argument: the signed release-keys
// document and the signed manifest (byte strings are length-capped by msgpack).
type updateArgs struct {
	Keys     []byte `msgpack:"keys"`
	Manifest []byte `msgpack:"manifest"`
}

// otaState holds the installer, made on first use, and the trusted clock
// its expiry checks use.
type otaState struct {
	once     sync.Once
	in       *install.Installer
	err      error
	clkOnce  sync.Once
	clk      *trustclock.Clock
	clkStart sync.Once
}

func (c *cloud) otaState() *otaState {
	v, _ := otaByCloud.LoadOrStore(c, &otaState{})
	return v.(*otaState)
}

// trustClock is the box's trusted clock (docs/ota.md, "trusted clock"):
// never below the image's build time, the last trusted time kept in the
// store, and the fleet's time seen in messages (observeFleetTime); the
// system clock is kept in the store while the cloud link's TLS handshake
// vouches for it.
func (c *cloud) trustClock() *trustclock.Clock {
	s := c.otaState()
	s.clkOnce.Do(func() {
		s.clk = &trustclock.Clock{
			Store: c.d.st, Build: buildinfo.BuildTime(), Log: c.d.log.With("component", "trustclock"),
			Vouched: func() bool { l := c.link.Load(); return l != nil && l.State() == cloudlink.StateOnline },
		}
	})
	return s.clk
}

// observeFleetTime takes the time of a message from the fleet (it came over
// the mutually authenticated link) as a lower bound of the current time.
func (c *cloud) observeFleetTime(env wire.Envelope) {
	if !env.Time.IsZero() {
		c.trustClock().Observe(env.Time)
	}
}

var otaByCloud sync.Map // *cloud → *otaState (kept out of the shared struct)

func (c *cloud) installer(ctx context.Context) (*install.Installer, error) {
	s := c.otaState()
	s.once.Do(func() {
		d := c.d
		if d.fleet == nil || len(d.fleet.OTARoot.Keys) == 0 {
			s.err = errors.New("no ota_root in the fleet file: updates are refused")
			return
		}
		keys, err := d.fleet.OTARoot.PublicKeys()
		if err != nil {
			s.err = err
			return
		}
		tgt := d.o.OTATarget
		if tgt == nil {
			if tgt, err = install.NewGokrazy(ctx, ""); err != nil {
				s.err = err
				return
			}
		}
		log := d.log.With("component", "ota")
		client := d.o.OTAClient
		if client == nil {
			if client, err = artifactClient(d.fleet.CAPEM); err != nil {
				s.err = err
				return
			}
		}
		s.in = &install.Installer{
			Store: d.st, Root: manifest.RootOfTrust{Keys: keys, Threshold: d.fleet.OTARoot.Threshold},
			HWTarget: hwTarget(), RunningVersion: runningRelease(buildinfo.Version), Target: tgt, Client: client, Log: log,
			Now:    c.trustClock().Now,
			Health: c.healthGate, Window: d.cfg.Cloud.UpdateHealthWindow.D(),
			Progress: func(e install.Event) {
				if g := d.o.TrialGuard; g != nil && (e.Phase == install.Committed || e.Phase == install.RolledBack) {
					g.Done()
				}
				attrs := map[string]string{"phase": string(e.Phase), "version": strconv.FormatUint(e.Version, 10)}
				if e.Phase == install.Downloading {
					if e.Percent%10 != 0 {
						return
					}
					attrs["percent"] = strconv.Itoa(e.Percent)
				}
				sev := "info"
				if e.Reason != "" {
					attrs["reason"] = e.Reason
					sev = "warning"
				}
				c.event(context.WithoutCancel(ctx), "ota", sev, "update "+string(e.Phase), attrs)
			},
			Audit: func(action, detail string) {
				d.audit(context.WithoutCancel(ctx), "ota", action, c.id.DeviceID(), "ota", detail)
			},
		}
		if g := d.o.TrialGuard; g != nil {
			g.Extend(s.in.Window + 10*time.Minute)
		}
	})
	return s.in, s.err
}

// healthGate is what a trial boot must pass within the window to be
// committed: the cloud link online, and where cameras are configured the
// recorder writing (see recorderWriting).
func (c *cloud) healthGate(ctx context.Context) error {
	if failHealthGate != "" {
		return fmt.Errorf("this build fails its health gate on purpose (%s)", failHealthGate)
	}
	if err := c.linkOnline(ctx); err != nil {
		return err
	}
	return c.d.rec.recorderWriting(ctx, time.Second)
}

// linkOnline waits until the cloud link is online.
func (c *cloud) linkOnline(ctx context.Context) error {
	for {
		if l := c.link.Load(); l != nil && l.State() == cloudlink.StateOnline {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cloud link not online: %w", context.Cause(ctx))
		case <-time.After(time.Second):
		}
	}
}

// recorderWriting waits until the recorder has written (fsync'd) a part
// since the gate started, and every camera that delivers frames has. A
// camera that sends nothing (unplugged, or its network down) does not fail
// an update on its own — the old version could not record it either — but
// when no camera gets a part written, the gate fails.
func (r *recording) recorderWriting(ctx context.Context, poll time.Duration) error {
	if r == nil || len(r.cams) == 0 {
		return nil
	}
	type base struct {
		parts  int64
		frames uint64
	}
	start := make([]base, len(r.cams))
	for i, c := range r.cams {
		start[i] = base{c.writer.Stats().Parts, c.ingest.Stats().Frames}
	}
	for {
		var lagging []string
		wrote := 0
		for i, c := range r.cams {
			parts, frames := c.writer.Stats().Parts, c.ingest.Stats().Frames
			switch {
			case parts > start[i].parts:
				wrote++
			case frames > start[i].frames:
				lagging = append(lagging, c.id+" (frames arrive, no part written)")
			default:
				lagging = append(lagging, c.id+" (no frames)")
			}
		}
		if wrote > 0 && !slices.ContainsFunc(lagging, func(s string) bool { return strings.Contains(s, "no part") }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("recorder wrote no part within the window: %s: %w", strings.Join(lagging, ", "), context.Cause(ctx))
		case <-time.After(poll):
		}
	}
}

// handleUpdate starts an offered update; progress arrives as "ota" events.
func (c *cloud) handleUpdate(ctx context.Context, cmd wire.Command) wire.CommandResult {
	var a updateArgs
	if err := msgpack.Unmarshal(cmd.Args, &a); err != nil || len(a.Keys) == 0 || len(a.Manifest) == 0 {
		return wire.CommandResult{Error: "update: args must be {keys, manifest} byte strings"}
	}
	in, err := c.installer(ctx)
	if err != nil {
		return wire.CommandResult{Error: "update: " + err.Error()}
	}
	go func() {
		if err := in.Offer(context.WithoutCancel(ctx), a.Keys, a.Manifest); err != nil {
			c.d.log.Warn("ota: update failed", "err", err)
		}
	}()
	return okResult(map[string]any{"accepted": true})
}

// otaResume continues an update a reboot interrupted (health gate included).
func (c *cloud) otaResume(ctx context.Context) {
	c.otaState().clkStart.Do(func() { go c.trustClock().Run(ctx, 10*time.Minute) })
	if c.d.fleet == nil || len(c.d.fleet.OTARoot.Keys) == 0 {
		return
	}
	in, err := c.installer(ctx)
	if err != nil {
		c.d.log.Warn("ota: not available", "err", err)
		return
	}
	if err := in.Resume(ctx); err != nil {
		c.d.log.Warn("ota: resume", "err", err)
	}
}

// artifactClient fetches release artifacts over HTTPS trusting the system
// roots and the fleet's CA, so a fleet can serve its releases itself (from
// its broker host, under a fleet-CA certificate). TLS only keeps the
// download private: the signed manifest decides what gets installed.
func artifactClient(fleetCAPEM string) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if fleetCAPEM != "" && !pool.AppendCertsFromPEM([]byte(fleetCAPEM)) {
		return nil, errors.New("fleet ca_pem holds no certificate")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}

// runningRelease is the release number in a version stamped by `outpost
// release build` ("v7" → 7); other versions ("dev", "itest-…") are 0.
func runningRelease(v string) uint64 {
	n, err := strconv.ParseUint(strings.TrimPrefix(v, "v"), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// hwTarget names this box's hardware target in manifests.
func hwTarget() string {
	if runtime.GOARCH == "arm64" {
		return "rpi"
	}
	return runtime.GOARCH
}
