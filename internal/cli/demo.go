package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/outpost-gw/outpost/internal/broker"
	"github.com/outpost-gw/outpost/internal/buildinfo"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/daemon"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/recorder/democam"
)

const demoListen = "127.0.0.1:8443"

// runDemo runs a whole small fleet in this process on embedded defaults: a
// fleet (CA, keys) in a temp dir, the embedded MQTT broker with mTLS and the
// fleet's ACL, the operator side claiming every box that asks, and outpostd
// with its LAN endpoint on loopback, enrolling by itself. No hardware
// watchdog: arming a laptop's would reboot it if the demo died.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	listen := fs.String("listen", demoListen, "address of the LAN endpoint (HTTPS)")
	dataDir := fs.String("data", "", "directory for the demo's fleet and box (default: a temp dir, removed at exit)")
	verbose := fs.Bool("v", false, "log at debug level")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dataDir == "" {
		tmp, err := os.MkdirTemp("", "outpost-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		*dataDir = tmp
	}
	if *listen == demoListen && !free(*listen) {
		*listen = "127.0.0.1:0" // the usual port is taken: any free one will do
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	f, brokerURL, stopBroker, err := demoFleet(filepath.Join(*dataDir, "fleet"), log)
	if err != nil {
		return err
	}
	defer stopBroker()
	fleetFile := filepath.Join(*dataDir, "fleet.json")
	if err := writeFleet(f, brokerURL, fleetFile); err != nil {
		return err
	}
	op, err := operator.Connect(ctx, f, operator.Options{BrokerURL: brokerURL, Log: log.With("component", "operator")})
	if err != nil {
		return err
	}
	defer op.Close()
	go op.ClaimAll(ctx) // in the demo the operator approves every box at once
	op.ServeRenewals(ctx)

	cam, err := democam.Start(democam.Options{FPS: 10, Log: log.With("component", "democam")})
	if err != nil {
		return err
	}
	defer cam.Close()

	cfg := config.Default()
	cfg.Recorder.Cameras = []config.Camera{{ID: "demo", URL: cam.URL}}
	cfg.Recorder.SegmentDuration = config.Duration(10 * time.Second) // recordings show on the timeline within seconds
	cfg.LAN.HTTPSAddr = *listen
	cfg.LAN.HTTPAddr = ""
	cfg.Watchdog.Disabled = true
	cfg.Storage.GrowPerm = false
	cfg.Cloud.TelemetryInterval = config.Duration(10e9)
	return daemon.Run(ctx, daemon.Options{
		Config:    &cfg,
		DataDir:   filepath.Join(*dataDir, "box"),
		FleetPath: fleetFile,
		Log:       log,
		Ready: func(ep daemon.Endpoints) {
			u := "https://" + ep.HTTPS
			now := time.Now()
			claims := tokens.Claims{User: "demo", Device: ep.DeviceID, Cameras: []string{"*"},
				Actions:   []string{tokens.ActionLive, tokens.ActionPlayback, tokens.ActionExport},
				NotBefore: now.Add(-time.Minute).Unix(), Expires: now.Add(24 * time.Hour).Unix()}
			tok, err := tokens.Mint(f.SigningKey(), claims)
			if err != nil {
				log.Error("demo: minting a viewer token", "err", err)
			}
			// A reusable token never goes into a URL; this one opens one.
			once := claims
			once.Actions, once.SingleUse, once.Expires = []string{tokens.ActionPlayback}, true, now.Add(time.Hour).Unix()
			onceTok, err := tokens.Mint(f.SigningKey(), once)
			if err != nil {
				log.Error("demo: minting a single-use token", "err", err)
			}
			fmt.Fprintf(stdout, `
Outpost %s demo is running (embedded defaults, nothing to set up):
a fleet with its own CA, an embedded MQTT broker (mTLS, per-box ACL) at %s,
one box that enrols by itself and reports to the fleet, and a synthetic
camera (%s) that the box records.

  Open the LAN page:      %s/
    installer view at once; sign in with the viewer token below to watch
    live video, the timeline of recordings, and download clips.
  Viewer token (a day):   %s
  The API with it:        curl -k -H "Authorization: Bearer <token>" %s/api/v1/cameras
  Play its first minute:  %s/api/v1/recordings/video?camera=demo&start=%s&duration=60&token=%s
    (a single-use link: it opens once)
  Health check:           %s/healthz

The tokens are signed by the demo fleet (outpost fleet token makes them for
a real fleet).
  Fleet directory:        %s
  Box data dir:           %s

The LAN certificate is self-signed, made on first start like on a real box:
your browser will ask you to accept it (curl: -k). Press Ctrl-C to stop.
`, buildinfo.Version, brokerURL, cam.URL, u, tok, u, u, now.UTC().Format(time.RFC3339), onceTok, u, f.Dir, filepath.Join(*dataDir, "box"))
		},
	})
}

// demoFleet makes a fleet and starts the embedded broker for it.
func demoFleet(dir string, log *slog.Logger) (*fleet.Fleet, *url.URL, func(), error) {
	f, err := fleet.Open(dir)
	if err != nil {
		f, err = fleet.Init(dir, fleet.InitOptions{Name: "demo", BrokerURL: "mqtts://127.0.0.1:8883", BrokerHosts: []string{"127.0.0.1", "localhost"}})
	}
	if err != nil {
		return nil, nil, nil, err
	}
	br, err := broker.StartFleet(f, "127.0.0.1:0", log.With("component", "broker"))
	if err != nil {
		return nil, nil, nil, err
	}
	return f, br.URL(), func() { br.Close() }, nil
}

// writeFleet writes the fleet file for a box, pointing at brokerURL.
func writeFleet(f *fleet.Fleet, brokerURL *url.URL, path string) error {
	ff, err := config.LoadFleet(f.FleetFilePath())
	if err != nil {
		return err
	}
	ff.BrokerURL = brokerURL.String()
	b, err := json.MarshalIndent(ff, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func free(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
