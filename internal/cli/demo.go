package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/outpost-gw/outpost/internal/buildinfo"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/daemon"
)

const demoListen = "127.0.0.1:8443"

// runDemo runs outpostd in this process on embedded defaults: a temporary
// data dir, the LAN endpoint on loopback, no hardware watchdog (arming a
// laptop's watchdog would reboot it if the demo died).
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	listen := fs.String("listen", demoListen, "address of the LAN endpoint (HTTPS)")
	dataDir := fs.String("data", "", "data dir to use and keep (default: a temp dir, removed at exit)")
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
		*dataDir = filepath.Join(tmp, "data")
	}
	if *listen == demoListen && !free(*listen) {
		*listen = "127.0.0.1:0" // the usual port is taken: any free one will do
	}
	cfg := config.Default()
	cfg.LAN.HTTPSAddr = *listen
	cfg.LAN.HTTPAddr = ""
	cfg.Watchdog.Disabled = true
	cfg.Storage.GrowPerm = false
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	return daemon.Run(ctx, daemon.Options{
		Config:  &cfg,
		DataDir: *dataDir,
		Log:     log,
		Ready: func(ep daemon.Endpoints) {
			u := "https://" + ep.HTTPS
			fmt.Fprintf(stdout, `
Outpost %s demo is running (embedded defaults, nothing to set up).

  Open the LAN endpoint:  %s/api/v1/status
  Health check:           %s/healthz
  Data dir:               %s

The certificate is self-signed, made on first start like on a real box: your
browser will ask you to accept it (curl: -k). Press Ctrl-C to stop.
`, buildinfo.Version, u, u, *dataDir)
		},
	})
}

func free(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
