package install

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/gokrazy/updater"

	"github.com/outpost-gw/outpost/ota/bootcmd"
)

// Socket is gokrazy's update API on the box.
const Socket = "/run/gokrazy-http.sock"

// Gokrazy is the Target over gokrazy's update endpoints (github.com/gokrazy/updater
// through the Unix socket).
//
// Testboot caveat (field notes): gokrazy's /update/testboot only works when
// boot/cmdline.txt ends with a newline; images built by `outpost image` must
// write it so (not yet enforced here). TrialBooted reads /proc/cmdline.
type Gokrazy struct {
	t       *updater.Target
	Cmdline string // default /proc/cmdline
	// InactiveRoot names the device ReadBack reads (default: the
	// inactive root partition, see InactiveRootDevice; tests: a file).
	InactiveRoot func() (string, error)
}

var _ ReadBacker = (*Gokrazy)(nil)

type authDoer struct {
	c        *http.Client
	password string
}

func (a authDoer) Do(r *http.Request) (*http.Response, error) {
	r.SetBasicAuth("gokrazy", a.password)
	return a.c.Do(r)
}

// NewGokrazy connects to the socket; the password comes from /perm/gokr-pw.txt
// or /etc/gokr-pw.txt.
func NewGokrazy(ctx context.Context, socket string) (*Gokrazy, error) {
	if socket == "" {
		socket = Socket
	}
	var pw []byte
	var err error
	for _, p := range []string{"/perm/gokr-pw.txt", "/etc/gokr-pw.txt"} {
		if pw, err = os.ReadFile(p); err == nil {
			break
		}
	}
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	t, err := updater.NewTarget(ctx, "http://gokrazy/", authDoer{c: c, password: strings.TrimSpace(string(pw))})
	if err != nil {
		return nil, fmt.Errorf("gokrazy update API at %s: %w", socket, err)
	}
	return &Gokrazy{t: t}, nil
}

func (g *Gokrazy) StreamTo(ctx context.Context, dest string, r io.Reader) error {
	return g.t.StreamTo(ctx, dest, r)
}
func (g *Gokrazy) Testboot(ctx context.Context) error { return g.t.Testboot(ctx) }
func (g *Gokrazy) Switch(ctx context.Context) error   { return g.t.Switch(ctx) }

// Reboot goes through the boot loader (no kexec), so the trial flag in
// cmdline.txt is read.
func (g *Gokrazy) Reboot(ctx context.Context) error { return g.t.RebootWithoutKexec(ctx) }

// TidyBootCmdline removes gokrazy's spent trial flags from the boot
// partition's cmdline.txt (see ota/bootcmd), so every update gets its
// trial boot; the boot partition is found beside /perm.
func (g *Gokrazy) TidyBootCmdline() (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	dev, err := bootcmd.BootPartition(f, "/perm")
	if err != nil {
		return false, err
	}
	return bootcmd.TidyDevice(dev)
}

func (g *Gokrazy) TrialBooted() (bool, error) {
	p := g.Cmdline
	if p == "" {
		p = "/proc/cmdline"
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return false, err
	}
	return strings.Contains(string(b), "gokrazy.try_boot_inactive=1"), nil
}
