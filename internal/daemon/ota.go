package daemon

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/outpost-gw/outpost/cloudlink"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/ota/install"
	"github.com/outpost-gw/outpost/ota/manifest"
)

// updateArgs is the "update" command's argument: the signed release-keys
// document and the signed manifest (byte strings are length-capped by msgpack).
type updateArgs struct {
	Keys     []byte `msgpack:"keys"`
	Manifest []byte `msgpack:"manifest"`
}

// otaState holds the installer, made on first use.
type otaState struct {
	once sync.Once
	in   *install.Installer
	err  error
}

var otaByCloud sync.Map // *cloud → *otaState (kept out of the shared struct)

func (c *cloud) installer(ctx context.Context) (*install.Installer, error) {
	v, _ := otaByCloud.LoadOrStore(c, &otaState{})
	s := v.(*otaState)
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
		tgt, err := install.NewGokrazy(ctx, "")
		if err != nil {
			s.err = err
			return
		}
		log := d.log.With("component", "ota")
		s.in = &install.Installer{
			Store: d.st, Root: manifest.RootOfTrust{Keys: keys, Threshold: d.fleet.OTARoot.Threshold},
			HWTarget: hwTarget(), Target: tgt, Log: log,
			Health: func(ctx context.Context) error { return c.linkOnline(ctx) },
			Progress: func(e install.Event) {
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
	})
	return s.in, s.err
}

// linkOnline waits until the cloud link is online. TODO: also require the
// recorder to be writing when cameras are configured.
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

// hwTarget names this box's hardware target in manifests.
func hwTarget() string {
	if runtime.GOARCH == "arm64" {
		return "rpi"
	}
	return runtime.GOARCH
}
