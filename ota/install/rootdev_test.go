package install

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestActiveRootPartition(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    int
	}{
		{"console=ttyS0,115200 root=PARTUUID=2e18c40c-02 init=/gokrazy/init rootwait", 2},
		{"root=PARTUUID=2e18c40c-03 init=/gokrazy/init gokrazy.try_boot_inactive=1\n", 3},
		{"root=PARTUUID=60c24cc1-f3f9-427a-8199-76baa2d60001/PARTNROFF=1 init=/gokrazy/init", 2},
		{"root=PARTUUID=60c24cc1-f3f9-427a-8199-76baa2d60001/PARTNROFF=2", 3},
		{"dwc_otg.lpm_enable=0 root=/dev/mmcblk0p3 rootwait", 3},
		{"root=/dev/sda2", 2},
		{"root=/dev/nvme0n1p3 quiet", 3},
		{"root=/dev/sda4", 0},
		{"root=PARTUUID=2e18c40c-01", 0},
		{"init=/gokrazy/init", 0},
		{"xroot=/dev/sda2", 0},
	} {
		got, err := ActiveRootPartition(tc.cmdline)
		if got != tc.want || (err != nil) != (tc.want == 0) {
			t.Errorf("ActiveRootPartition(%q) = %d, %v; want %d", tc.cmdline, got, err, tc.want)
		}
	}
}

func TestInactiveRootDevice(t *testing.T) {
	const mi = "22 1 0:20 / / ro,relatime - squashfs /dev/root ro\n" +
		"30 22 8:4 / /perm rw,relatime - ext4 %s rw\n"
	for _, tc := range []struct{ cmdline, perm, want string }{
		{"root=PARTUUID=2e18c40c-02", "/dev/sda4", "/dev/sda3"},
		{"root=PARTUUID=2e18c40c-03", "/dev/sda4", "/dev/sda2"},
		{"root=/dev/mmcblk0p2", "/dev/mmcblk0p4", "/dev/mmcblk0p3"},
		{"root=PARTUUID=60c24cc1-f3f9-427a-8199-76baa2d60001/PARTNROFF=2", "/dev/nvme0n1p4", "/dev/nvme0n1p2"},
		{"root=PARTUUID=2e18c40c-02", "/dev/vda4", "/dev/vda3"},
	} {
		got, err := InactiveRootDevice(tc.cmdline, strings.NewReader(strings.Replace(mi, "%s", tc.perm, 1)))
		if err != nil || got != tc.want {
			t.Errorf("InactiveRootDevice(%q, /perm on %s) = %q, %v; want %q", tc.cmdline, tc.perm, got, err, tc.want)
		}
	}
	if _, err := InactiveRootDevice("root=/dev/sda2", strings.NewReader("22 1 0:20 / / ro - squashfs /dev/root ro\n")); err == nil {
		t.Error("no /perm mount: no error")
	}
}

// gokrazyRig is the installer over the real Gokrazy target, talking
// gokrazy's update protocol (github.com/gokrazy/updater) to an
// UpdaterServer that writes the "partition" file; ReadBack reads the
// device InactiveRoot names.
func gokrazyRig(t *testing.T) (*rig, *UpdaterServer, *Gokrazy) {
	r := newRig(t)
	us := &UpdaterServer{Path: filepath.Join(r.dir, "sda3")}
	srv := httptest.NewServer(us)
	t.Cleanup(srv.Close)
	g, err := NewGokrazyAt(context.Background(), srv.URL+"/", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	g.Cmdline = filepath.Join(r.dir, "cmdline")
	os.WriteFile(g.Cmdline, []byte("root=PARTUUID=2e18c40c-02 init=/gokrazy/init\n"), 0o600)
	g.InactiveRoot = func() (string, error) { return us.Path, nil }
	r.in.Target = g
	return r, us, g
}

func TestGokrazyReadBack(t *testing.T) {
	r, us, _ := gokrazyRig(t)
	// The partition is bigger than the image and holds an older root.
	os.WriteFile(us.Path, bytes.Repeat([]byte{0xee}, len(r.image)+1<<20), 0o600)
	if err := r.in.Offer(context.Background(), r.keys, r.manifest(t, 2, r.image)); err != nil {
		t.Fatal(err)
	}
	if p := r.phase(t); p != Trial {
		t.Fatalf("phase %q", p)
	}
	var phases []Phase
	for _, e := range r.events {
		if len(phases) == 0 || phases[len(phases)-1] != e.Phase {
			phases = append(phases, e.Phase)
		}
	}
	// verifying twice: the offer, then the written partition.
	if want := []Phase{Offered, Verifying, Downloading, Verifying, Installed, Trial}; !slices.Equal(phases, want) {
		t.Errorf("phases %v, want %v", phases, want)
	}
	if want := []string{"GET /update/features", "PUT /update/root", "POST /update/testboot", "POST /reboot"}; !slices.Equal(us.Calls(), want) {
		t.Errorf("calls %v, want %v", us.Calls(), want)
	}
}

// TestGokrazyReadBackMismatch: the device does not hold what was streamed
// (a medium that lost writes, or gokrazy wrote another partition): the
// install fails before testboot.
func TestGokrazyReadBackMismatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		dev  func(r *rig, us *UpdaterServer) string
	}{
		{"other bytes", func(r *rig, us *UpdaterServer) string {
			p := filepath.Join(r.dir, "sda2")
			os.WriteFile(p, bytes.Repeat([]byte{0xee}, len(r.image)), 0o600)
			return p
		}},
		{"one flipped byte", func(r *rig, us *UpdaterServer) string {
			p := filepath.Join(r.dir, "flipped")
			b := bytes.Clone(r.image)
			b[len(b)-1] ^= 1
			os.WriteFile(p, b, 0o600)
			return p
		}},
		{"shorter than the signed length", func(r *rig, us *UpdaterServer) string {
			p := filepath.Join(r.dir, "short")
			os.WriteFile(p, r.image[:len(r.image)-1], 0o600)
			return p
		}},
		{"missing", func(r *rig, us *UpdaterServer) string { return filepath.Join(r.dir, "nonexistent") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, us, g := gokrazyRig(t)
			dev := tc.dev(r, us)
			g.InactiveRoot = func() (string, error) { return dev, nil }
			err := r.in.Offer(context.Background(), r.keys, r.manifest(t, 2, r.image))
			if err == nil {
				t.Fatal("installed")
			}
			if p := r.phase(t); p != RolledBack {
				t.Fatalf("phase %q", p)
			}
			if slices.Contains(us.Calls(), "POST /update/testboot") {
				t.Error("testboot after a failed re-hash")
			}
			if !slices.Contains(r.audits, "ota.failed") {
				t.Errorf("not audited: %v", r.audits)
			}
		})
	}
	var g Gokrazy
	if _, err := g.ReadBack("boot"); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadBack(boot) = %v", err)
	}
}
