package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/outpost-gw/outpost/cloudlink"
	"github.com/outpost-gw/outpost/cloudlink/identity"
	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/buildinfo"
	"github.com/outpost-gw/outpost/internal/config"
)

// cloud is the daemon's side of the fleet link: identity, enrolment, the
// link itself, telemetry, and the command dispatcher.
type cloud struct {
	d        *daemon
	id       *identity.Identity
	ob       *outbox.Outbox
	link     atomic.Pointer[cloudlink.Link] // set once enrolled
	enrolled chan struct{}

	renewMu  sync.Mutex
	renewKey *ecdsa.PrivateKey // the key of the renewal in flight
}

// setupCloud prepares identity and outbox; it needs a fleet with a claim
// credential. Errors here stop start-up: they mean a broken data dir or
// fleet file, not a network problem.
func (d *daemon) setupCloud() (*cloud, error) {
	if d.fleet == nil || d.fleet.ClaimCertPEM == "" {
		return nil, nil
	}
	id, err := identity.LoadOrCreate(filepath.Join(d.o.DataDir, "identity"))
	if err != nil {
		return nil, err
	}
	ob, err := outbox.Open(d.st, outbox.Options{
		BudgetBytes: int64(d.cfg.Cloud.OutboxBudgetMB) << 20,
		Log:         d.log.With("component", "outbox"),
	})
	if err != nil {
		return nil, err
	}
	return &cloud{d: d, id: id, ob: ob, enrolled: make(chan struct{})}, nil
}

func (c *cloud) run(ctx context.Context) error {
	d := c.d
	log := d.log.With("component", "cloudlink")
	broker, err := url.Parse(d.fleet.BrokerURL)
	if err != nil {
		return fmt.Errorf("fleet broker_url: %w", err)
	}
	pool := x509.NewCertPool()
	if d.fleet.CAPEM != "" && !pool.AppendCertsFromPEM([]byte(d.fleet.CAPEM)) {
		return errors.New("fleet ca_pem holds no certificate")
	}
	var proxy *url.URL
	if d.cfg.Cloud.Proxy != "" {
		proxy, _ = url.Parse(d.cfg.Cloud.Proxy)
	}
	if !c.id.Enrolled() {
		claim, err := tls.X509KeyPair([]byte(d.fleet.ClaimCertPEM), []byte(d.fleet.ClaimKeyPEM))
		if err != nil {
			return fmt.Errorf("fleet claim credential: %w", err)
		}
		d.console(fmt.Sprintf("outpost: not enrolled yet. Claim code %s (device %s): outpost fleet claim %s",
			c.id.ClaimCode(), c.id.DeviceID(), c.id.ClaimCode()))
		for !c.id.Enrolled() {
			enr := &cloudlink.Enroller{
				Identity: c.id, BrokerURL: broker, RootCAs: pool, Claim: claim, Proxy: proxy,
				Board: d.board.String(), Version: buildinfo.Version, Log: log,
			}
			err := enr.Run(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				log.Error("enrolment refused; asking again in 10 minutes", "err", err)
				d.audit(ctx, "fleet", "enrol", c.id.DeviceID(), "cloud", err.Error())
				sleepCtx(ctx, 10*time.Minute)
			}
		}
		d.audit(ctx, "fleet", "enrol", c.id.DeviceID(), "cloud", "ok")
	}
	close(c.enrolled)
	link, err := cloudlink.New(cloudlink.Config{
		DeviceID:    c.id.DeviceID(),
		BrokerURL:   broker,
		RootCAs:     pool,
		Certificate: c.id.TLSCertificate,
		Proxy:       proxy,
		Outbox:      c.ob,
		Handler:     c,
		Dedup:       &cloudlink.StoreDedup{Store: d.st, Now: time.Now},
		Log:         log,
	})
	if err != nil {
		return err
	}
	c.link.Store(link)
	go c.telemetry(ctx)
	go c.renewals(ctx)
	go c.otaResume(ctx)
	return link.Run(ctx)
}

// HandleCommand is the one dispatcher for commands from the fleet: each
// command goes to the subsystem that owns it, and to the audit log.
func (c *cloud) HandleCommand(ctx context.Context, env wire.Envelope, cmd wire.Command) wire.CommandResult {
	c.observeFleetTime(env)
	var r wire.CommandResult
	switch cmd.Name {
	case "ping":
		r = okResult(map[string]any{"version": buildinfo.Version, "boot_id": c.d.bootID})
	case "status":
		r = okResult(c.d.status())
	case "update":
		r = c.handleUpdate(ctx, cmd)
	case "export", "clip", "snapshot", "export.cancel":
		r = c.handleExport(ctx, env, cmd)
	case "hold", "hold.release":
		r = c.handleHold(ctx, env, cmd)
	default:
		r = wire.CommandResult{Error: fmt.Sprintf("unknown command %q", cmd.Name)}
	}
	res := "ok"
	if !r.OK {
		res = r.Error
	}
	c.d.audit(ctx, "cloud:"+env.ID.String(), "command "+cmd.Name, c.id.DeviceID(), "cloud", res)
	return r
}

// HandleConfig applies a config pushed by the fleet: validated as strictly
// as the file at start-up, written atomically to the data dir, its version
// kept, and then the daemon restarts its components on it. A bad config is
// refused with the reason, and the running one stays.
func (c *cloud) HandleConfig(ctx context.Context, env wire.Envelope, want wire.ConfigDesired) wire.ConfigReported {
	c.observeFleetTime(env)
	d := c.d
	cur, err := d.appliedConfigVersion()
	if err != nil {
		return wire.ConfigReported{Version: want.Version, Error: "store: " + err.Error()}
	}
	switch {
	case want.Version == cur:
		return wire.ConfigReported{} // already running it (retained message seen again)
	case want.Version < cur:
		d.audit(ctx, "cloud:"+env.ID.String(), fmt.Sprintf("config v%d", want.Version), "config", "cloud", "refused: older than applied")
		return wire.ConfigReported{Version: want.Version, Error: fmt.Sprintf("refused: version %d is older than the applied version %d", want.Version, cur)}
	}
	if _, err := config.Parse(want.Config); err != nil {
		d.audit(ctx, "cloud:"+env.ID.String(), fmt.Sprintf("config v%d", want.Version), "config", "cloud", "refused: "+err.Error())
		return wire.ConfigReported{Version: want.Version, Error: "refused: " + err.Error()}
	}
	if err := d.savePushedConfig(want.Version, want.Config); err != nil {
		return wire.ConfigReported{Version: want.Version, Error: err.Error()}
	}
	d.audit(ctx, "cloud:"+env.ID.String(), fmt.Sprintf("config v%d", want.Version), "config", "cloud", "ok")
	// Restart once the report is queued (the link queues it when we return).
	time.AfterFunc(500*time.Millisecond, func() { d.restart(fmt.Sprintf("config v%d", want.Version)) })
	return wire.ConfigReported{Version: want.Version, Applied: true}
}

// renewals asks the fleet for a new key's certificate once the current one
// is RenewAfter old (or expires within that span), retrying hourly. The new
// key exists only in memory until the certificate for it arrives; then both
// replace the old pair in one atomic write.
func (c *cloud) renewals(ctx context.Context) {
	d := c.d
	every := min(time.Hour, max(d.cfg.Cloud.RenewAfter.D()/2, time.Second))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
		l := c.link.Load()
		if l == nil || l.State() != cloudlink.StateOnline || !c.id.NeedsRenewal(time.Now(), d.cfg.Cloud.RenewAfter.D()) {
			continue
		}
		key, err := identity.NewKey()
		if err != nil {
			continue
		}
		csr, err := c.id.CSR(key)
		if err != nil {
			continue
		}
		env, err := wire.New(wire.TypeEnrolRequest, time.Now(), wire.EnrolRequest{
			DeviceID: c.id.DeviceID(), ClaimCode: c.id.ClaimCode(), CSR: csr, Board: d.board.String(), Version: buildinfo.Version,
		})
		if err != nil {
			continue
		}
		b, err := wire.Encode(env)
		if err != nil {
			continue
		}
		c.renewMu.Lock()
		c.renewKey = key
		c.renewMu.Unlock()
		if err := l.Publish(ctx, "renew", b); err != nil {
			d.log.Warn("certificate renewal: request not sent", "err", err)
			continue
		}
		d.log.Info("certificate renewal: asked the fleet for a new certificate")
	}
}

// HandleRenewal installs the renewed certificate with its key.
func (c *cloud) HandleRenewal(ctx context.Context, env wire.Envelope, r wire.EnrolResponse) {
	c.observeFleetTime(env)
	d := c.d
	c.renewMu.Lock()
	key := c.renewKey
	c.renewKey = nil
	c.renewMu.Unlock()
	switch {
	case key == nil:
		d.log.Warn("certificate renewal: an answer nobody asked for; ignored")
		return
	case r.Error != "":
		d.log.Error("certificate renewal refused", "err", r.Error)
		d.audit(ctx, "fleet", "renew certificate", c.id.DeviceID(), "cloud", "refused: "+r.Error)
		return
	}
	if err := c.id.Install(key, r.CertPEM); err != nil {
		d.log.Error("certificate renewal: bad certificate", "err", err)
		d.audit(ctx, "fleet", "renew certificate", c.id.DeviceID(), "cloud", err.Error())
		return
	}
	d.log.Info("certificate renewed; used from the next connection")
	d.audit(ctx, "fleet", "renew certificate", c.id.DeviceID(), "cloud", "ok")
}

func okResult(v any) wire.CommandResult {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return wire.CommandResult{Error: err.Error()}
	}
	return wire.CommandResult{OK: true, Result: b}
}

// telemetry queues health and link figures every interval.
func (c *cloud) telemetry(ctx context.Context) {
	t := time.NewTicker(c.d.cfg.Cloud.TelemetryInterval.D())
	defer t.Stop()
	var meter usageMeter
	camStates := map[string]string{}
	for {
		c.report(ctx, &meter)
		c.cameraEvents(ctx, camStates)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *cloud) report(ctx context.Context, meter *usageMeter) {
	s := c.d.status()
	m := map[string]float64{
		"uptime_s":            float64(s.UptimeS),
		"load1":               s.Load1,
		"mem_total_bytes":     float64(s.MemTotal),
		"mem_available_bytes": float64(s.MemAvail),
		"perm_total_bytes":    float64(s.DataDir.TotalBytes),
		"perm_avail_bytes":    float64(s.DataDir.AvailBytes),
	}
	if s.TempC != 0 {
		m["temperature_c"] = s.TempC
	}
	if l := c.link.Load(); l != nil {
		ls := l.Stats()
		m["link_rtt_ms"] = float64(ls.RTT.Milliseconds())
		m["link_reconnects"] = float64(ls.Reconnects)
		m["link_bytes_up"] = float64(ls.BytesUp)
		m["link_bytes_down"] = float64(ls.BytesDown)
		m["link_refused"] = float64(ls.Refused)
		if u, err := c.updateUsage(ctx, meter, ls, time.Now()); err == nil {
			m["usage_today_up_bytes"] = float64(u.UpBytes)
			m["usage_today_down_bytes"] = float64(u.DownBytes)
			for s, n := range u.ByStream {
				m["usage_today_"+strings.ReplaceAll(s, ".", "_")+"_bytes"] = float64(n)
			}
		} else {
			c.d.log.Warn("data usage not recorded", "err", err)
		}
	}
	if c.d.rec != nil {
		now := time.Now()
		for _, cs := range c.d.rec.cameras() {
			p := "camera_" + strings.ReplaceAll(cs.ID, "-", "_") + "_"
			m[p+"online"] = b2f(cs.State == "online")
			m[p+"fps"] = cs.FPS
			m[p+"bitrate_bps"] = cs.BitrateBPS
			m[p+"reconnects"] = float64(cs.Reconnects)
			if !cs.LastKeyFrame.IsZero() {
				m[p+"keyframe_age_s"] = now.Sub(cs.LastKeyFrame).Seconds()
			}
		}
	}
	if obs, err := c.ob.Stats(); err == nil {
		var depth, dropped int64
		var oldest time.Duration
		for _, st := range obs.Streams {
			depth += st.Depth
			dropped += st.Dropped
			oldest = max(oldest, st.Age)
		}
		m["outbox_depth"] = float64(depth)
		m["outbox_dropped"] = float64(dropped)
		m["outbox_bytes"] = float64(obs.TotalBytes)
		m["outbox_oldest_s"] = oldest.Seconds()
	}
	env, err := wire.New(wire.TypeTelemetry, time.Now(), wire.Telemetry{
		Metrics: m,
		Labels:  map[string]string{"version": buildinfo.Version, "board": s.Board, "watchdog": s.Watchdog},
	})
	if err != nil {
		c.d.log.Warn("telemetry", "err", err)
		return
	}
	b, err := wire.Encode(env)
	if err == nil {
		_, err = c.ob.Append(ctx, outbox.StreamTelemetry, b)
	}
	if err != nil && ctx.Err() == nil {
		c.d.log.Warn("telemetry not queued", "err", err)
	}
}

// cameraEvents raises camera_offline when a camera that was online is not
// at a telemetry round, and camera_recovered when it is online again: the
// events come in pairs (a camera's first connection after start-up is no
// recovery).
func (c *cloud) cameraEvents(ctx context.Context, last map[string]string) {
	if c.d.rec == nil {
		return
	}
	const announced = "offline announced"
	for _, cs := range c.d.rec.cameras() {
		prev := last[cs.ID]
		switch {
		case cs.State == "online":
			if prev == announced {
				c.event(ctx, "camera_recovered", wire.SeverityInfo, "camera "+cs.ID+" is back", map[string]string{"camera": cs.ID})
			}
			last[cs.ID] = cs.State
		case prev == "online":
			msg := "camera " + cs.ID + " went offline"
			if cs.LastError != "" {
				msg += ": " + cs.LastError
			}
			c.event(ctx, "camera_offline", wire.SeverityWarning, msg, map[string]string{"camera": cs.ID})
			last[cs.ID] = announced
		case prev != announced:
			last[cs.ID] = cs.State
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
