// Package daemon assembles outpostd: it loads and validates the config before
// touching anything, opens the state store, serves the LAN endpoint, pets the
// hardware watchdog while its own checks pass, and shuts everything down in
// order when its context ends. pkgs/outpostd is a thin main over Run; the
// host CLI's demo runs the same code in-process.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/hardware"
	"github.com/outpost-gw/outpost/internal/audit"
	"github.com/outpost-gw/outpost/internal/buildinfo"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/lanserver"
	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/ota/install"
	bolt "go.etcd.io/bbolt"
)

// Paths on the appliance.
const (
	DefaultDataDir   = "/perm/outpost"
	DefaultFleetPath = "/etc/outpost/fleet.json"
	permMount        = "/perm"
)

// Options configure one run of the daemon.
type Options struct {
	// started, in tests, is given the daemon before it runs.
	started func(*daemon)
	// ConfigPath is the JSON config file; empty means built-in defaults.
	ConfigPath string
	// Config, when set, is used instead of ConfigPath (demo, tests).
	Config *config.Config
	// DataDir holds the store, keys and (later) recordings.
	DataDir string
	// FleetPath is the fleet file baked into the image; a missing file means
	// the box belongs to no fleet yet, a malformed one stops start-up.
	FleetPath string
	// Console, if set, receives one line when the daemon is up (gokrazy
	// shows /dev/console on the screen and serial port, not app logs).
	Console string

	// Log receives the daemon's logs; nil means text to stderr at the
	// configured level.
	Log *slog.Logger
	// Root is the file system hardware facts are read from (default "/").
	Root fs.FS
	// Sensors and OpenWatchdog replace the hardware in tests.
	Sensors      hardware.Sensors
	OpenWatchdog func(path string) (hardware.Watchdog, error)
	// GrowPerm grows the /perm partition; nil uses permgrow on the device.
	GrowPerm func(ctx context.Context, log *slog.Logger, mountpoint string) error
	// Ready is called once the LAN endpoint listens.
	Ready func(Endpoints)
	// OTATarget and OTAClient replace gokrazy's updater and the artifact
	// HTTPS client in tests (nil: the device's).
	OTATarget install.Target
	OTAClient *http.Client
	// ExportClient uploads exports in tests (nil: one with cloud.proxy).
	ExportClient *http.Client
	// TrialGuard is outpostd's trial-boot guard (ota/trialguard); nil: none.
	TrialGuard TrialGuard
}

// Endpoints are the addresses the daemon listens on.
type Endpoints struct {
	HTTPS string
	HTTP  string
	// RTSP is the live restream server's address, empty when off.
	RTSP string
	// DeviceID is the box's id when it belongs to a fleet.
	DeviceID string
}

// Boot is the record of one start of the daemon, kept in the store.
type Boot struct {
	Count   uint64    `json:"count"`
	BootID  string    `json:"boot_id"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
}

var bootBucket = store.NewBucket[Boot]("boot")

// Run runs the daemon until ctx ends. A config pushed by the fleet makes it
// restart its components on the new config, in-process.
//
// A pushed config that passed validation but fails at start (an address
// already taken, say) is set aside and the daemon starts again on the
// image's config, reporting the failure (audit entry and event), so a bad
// push never leaves a box down.
func Run(ctx context.Context, o Options) error {
	for {
		err := runOnce(ctx, o)
		if errors.Is(err, ErrRestart) {
			continue
		}
		if err != nil && ctx.Err() == nil && o.DataDir != "" {
			if moved, merr := setAsidePushedConfig(o.DataDir, err); merr == nil && moved {
				continue
			}
		}
		return err
	}
}

func runOnce(ctx context.Context, o Options) error {
	cfg, err := loadConfig(o)
	if err != nil {
		return err
	}
	var fleet *config.Fleet
	if o.FleetPath != "" {
		f, err := config.LoadFleet(o.FleetPath)
		switch {
		case err == nil:
			fleet = &f
		case errors.Is(err, fs.ErrNotExist):
		default:
			return err
		}
	}
	if o.DataDir == "" {
		return errors.New("no data dir given")
	}
	log := o.Log
	if log == nil {
		lvl, _ := cfg.SlogLevel()
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	}
	if pushed, err := pushedConfig(o.DataDir); err != nil {
		// Validated before it was written; if it is bad now, the disk is.
		log.Error("ignoring the config pushed by the fleet", "err", err)
	} else if pushed != nil {
		cfg = *pushed
		log.Info("running the config pushed by the fleet", "file", filepath.Join(o.DataDir, PushedConfigFile))
	}
	if o.Root == nil {
		o.Root = os.DirFS("/")
	}
	if o.Sensors == nil {
		o.Sensors = hardware.NewLinuxSensors(o.Root)
	}
	if o.OpenWatchdog == nil {
		o.OpenWatchdog = hardware.OpenWatchdog
	}
	d := &daemon{o: o, cfg: cfg, fleet: fleet, log: log, started: time.Now()}
	if o.started != nil {
		o.started(d)
	}
	return d.run(ctx)
}

func loadConfig(o Options) (config.Config, error) {
	switch {
	case o.Config != nil:
		if err := o.Config.Validate(); err != nil {
			return config.Config{}, fmt.Errorf("config: %w", err)
		}
		return *o.Config, nil
	case o.ConfigPath != "":
		return config.Load(o.ConfigPath)
	}
	return config.Default(), nil
}

type daemon struct {
	o           Options
	cfg         config.Config
	fleet       *config.Fleet
	log         *slog.Logger
	started     time.Time
	board       hardware.Board
	bootID      string
	st          *store.Store
	petter      *hardware.Petter
	boot        Boot
	auditLog    *audit.Log
	cloud       *cloud
	rec         *recording
	locks       lockout // failed sign-ins and tokens per source
	rates       rateLimits
	anon        minutely // audited requests without a token, per source
	statusAudit minutely // audited off-site status views, per source
	// restart stops the components so that Run starts them again.
	restart func(reason string)
}

func (d *daemon) run(ctx context.Context) error {
	d.board = hardware.DetectBoard(d.o.Root)
	d.bootID = readBootID(d.o.Root)
	d.log.Info("outpostd starting", "version", buildinfo.Version, "board", d.board.String(), "boot_id", d.bootID, "data", d.o.DataDir)
	if d.fleet != nil {
		d.log.Info("fleet", "name", d.fleet.Name, "broker", d.fleet.BrokerURL)
	} else {
		d.log.Warn("no fleet file; the box is not bound to a fleet", "path", d.o.FleetPath)
	}

	d.growPerm(ctx)

	st, err := store.Open(d.o.DataDir, d.log.With("component", "store"))
	if err != nil {
		return err
	}
	d.st = st
	defer func() {
		if err := st.Close(); err != nil {
			d.log.Error("closing store", "err", err)
		} else {
			d.log.Info("store closed")
		}
	}()
	if d.boot, err = d.recordBoot(); err != nil {
		return err
	}
	d.log.Info("boot recorded", "count", d.boot.Count)

	if d.cloud, err = d.setupCloud(); err != nil {
		return err
	}
	var ob *outbox.Outbox
	if d.cloud != nil {
		ob = d.cloud.ob
	}
	d.auditLog, err = audit.Open(st, ob, time.Now, d.log.With("component", "audit"))
	if errors.Is(err, audit.ErrBroken) {
		// Tampering or corruption: say so loudly, keep auditing.
		d.log.Error("audit log chain does not verify", "err", err)
		d.audit(ctx, "system", "audit verify", "audit log", "", err.Error())
		if d.cloud != nil {
			d.cloud.event(ctx, "audit_chain_broken", wire.SeverityCritical, err.Error(), nil)
		}
	} else if err != nil {
		return err
	}
	d.audit(ctx, "system", "start", buildinfo.Version, "", "ok")
	d.reportFailedConfig(ctx)

	if d.rec, err = d.setupRecording(); err != nil {
		return err
	}

	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, d.cfg.LAN.Hostnames...)
	hosts = append(hosts, localAddrs()...)
	cert, created, err := lanserver.LoadOrCreateCert(filepath.Join(d.o.DataDir, "tls"), hosts)
	if err != nil {
		return err
	}
	if created {
		d.log.Info("made a self-signed LAN certificate", "hosts", hosts)
	}
	lan := &lanserver.Server{
		HTTPSAddr: d.cfg.LAN.HTTPSAddr,
		HTTPAddr:  d.cfg.LAN.HTTPAddr,
		Cert:      cert,
		Handler:   d.routes(),
		Log:       d.log.With("component", "lan"),
	}
	if err := lan.Listen(); err != nil {
		return err
	}
	ep := Endpoints{HTTPS: lan.HTTPSListenAddr().String()}
	if d.cloud != nil {
		ep.DeviceID = d.cloud.id.DeviceID()
	}
	if a := lan.HTTPListenAddr(); a != nil {
		ep.HTTP = a.String()
	}
	if d.rec.live != nil {
		ep.RTSP = d.rec.live.Addr().String()
	}

	d.petter = d.newPetter()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	d.restart = func(reason string) {
		d.log.Info("restarting the daemon's components", "reason", reason)
		cancel(ErrRestart)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	wg.Add(2)
	go func() { defer wg.Done(); errc <- lan.Run(ctx) }()
	go func() { defer wg.Done(); errc <- d.petter.Run(ctx) }()
	if d.cloud != nil {
		wg.Add(1)
		go func() { defer wg.Done(); errc <- d.cloud.run(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); d.rec.run(ctx) }()

	d.console(fmt.Sprintf("outpost %s up: LAN endpoint on %s %v (board %s)", buildinfo.Version, ep.HTTPS, localAddrs(), d.board))
	if d.o.Ready != nil {
		d.o.Ready(ep)
	}

	var runErr error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down")
	case runErr = <-errc:
		d.log.Error("component stopped", "err", runErr)
	}
	cancel(nil)
	wg.Wait()
	if runErr == nil && errors.Is(context.Cause(ctx), ErrRestart) {
		return ErrRestart
	}
	return runErr
}

// audit records an entry; failures are logged, never fatal.
func (d *daemon) audit(ctx context.Context, actor, action, target, source, result string) {
	if d.auditLog == nil {
		return
	}
	if _, err := d.auditLog.Record(ctx, actor, action, target, source, result); err != nil {
		d.log.Error("audit", "err", err)
	}
}

func (d *daemon) recordBoot() (Boot, error) {
	var b Boot
	err := d.st.Update(func(tx *bolt.Tx) error {
		prev, err := bootBucket.Get(tx, "last")
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		b = Boot{Count: prev.Count + 1, BootID: d.bootID, Version: buildinfo.Version, Started: time.Now().UTC()}
		return bootBucket.Put(tx, "last", b)
	})
	if err != nil {
		return Boot{}, fmt.Errorf("recording boot: %w", err)
	}
	return b, nil
}

// checks are the daemon's own health checks; the watchdog is petted only
// while they pass, so a wedged daemon gets the box rebooted.
func (d *daemon) checks() error {
	return d.st.View(func(tx *bolt.Tx) error {
		_, err := bootBucket.Get(tx, "last")
		return err
	})
}

func (d *daemon) newPetter() *hardware.Petter {
	p := &hardware.Petter{
		Interval: d.cfg.Watchdog.Interval.D(),
		Check:    d.checks,
		Log:      d.log.With("component", "watchdog"),
		Clock:    hardware.SystemClock{},
	}
	if d.cfg.Watchdog.Disabled {
		return p
	}
	wd, err := d.o.OpenWatchdog(d.cfg.Watchdog.Device)
	switch {
	case errors.Is(err, hardware.ErrNoWatchdog):
		// The Petter logs the absence once.
		return p
	case errors.Is(err, hardware.ErrWatchdogBusy):
		// On gokrazy, init opens /dev/watchdog at boot and pets it while
		// the kernel and init live; the device admits one opener.
		d.log.Info("hardware watchdog is held by another process (gokrazy init pets it); not petting", "device", d.cfg.Watchdog.Device)
		return p
	case err != nil:
		d.log.Warn("hardware watchdog unusable", "device", d.cfg.Watchdog.Device, "err", err)
		return p
	}
	p.Watchdog = wd
	return p
}

func (d *daemon) growPerm(ctx context.Context) {
	if !d.cfg.Storage.GrowPerm || !strings.HasPrefix(filepath.Clean(d.o.DataDir)+"/", permMount+"/") {
		return
	}
	grow := d.o.GrowPerm
	if grow == nil {
		grow = growPermDevice
	}
	// A failed grow costs space, not function: log it and go on.
	if err := grow(ctx, d.log.With("component", "permgrow"), permMount); err != nil {
		d.log.Warn("could not grow /perm to the size of the disk", "err", err)
	}
}

func (d *daemon) console(line string) {
	if d.o.Console == "" {
		return
	}
	f, err := os.OpenFile(d.o.Console, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		d.log.Debug("console", "err", err)
		return
	}
	defer f.Close()
	io.WriteString(f, line+"\n")
}

func readBootID(root fs.FS) string {
	b, err := fs.ReadFile(root, "proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func localAddrs() []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && (n.IP.IsPrivate() || n.IP.IsLinkLocalUnicast()) {
			out = append(out, n.IP.String())
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}
