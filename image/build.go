// Package image builds Outpost's flashable disk images: a gokrazy instance
// (the config.json per target in this directory) is built with gok, driven
// in-process, into a full disk image — boot, root A, root B and /perm — and
// /perm is then formatted as ext4, which `gok overwrite --full` leaves
// undone. The daemon grows /perm to fill the disk on first boot.
package image

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/modfile"

	"github.com/outpost-gw/outpost/internal/buildinfo"
	"github.com/outpost-gw/outpost/internal/config"
)

//go:embed amd64/config.json rpi/config.json
var instanceConfigs embed.FS

// Module is the import path of this repository's module.
const Module = "github.com/outpost-gw/outpost"

// DaemonPackage is the daemon's import path, the one package we put in the image.
const DaemonPackage = Module + "/pkgs/outpostd"

// FleetPathInImage is where the fleet file lands in the root file system.
const FleetPathInImage = "/etc/outpost/fleet.json"

// DefaultSizeBytes is the image size: 100 MB boot, 2 × 500 MB root and
// the rest /perm. The box grows /perm to its disk on first boot, so the
// image stays small to write.
const DefaultSizeBytes = 1536 << 20

// Targets lists the hardware targets an image can be built for.
var Targets = []string{"amd64", "rpi"}

// Options say what to build.
type Options struct {
	Target    string // "amd64" or "rpi"
	Out       string // path of the disk image to write
	FleetFile string // optional fleet JSON to bake in
	Version   string // stamped into outpostd; default: buildinfo.Version
	SizeBytes int64  // default DefaultSizeBytes
	// RepoRoot is the checkout of this module that is built; default: found
	// from the working directory.
	RepoRoot string
	// Progress receives one line per step and gok's output.
	Progress io.Writer
	// KeepWorkDir leaves the generated gokrazy instance for inspection.
	KeepWorkDir bool
	// GokCommand is the argv prefix that runs gok; default: this executable
	// with the argument "gok" (the outpost CLI embeds gok, so nothing needs
	// installing).
	GokCommand []string
	// Verbose shows all of gok's output instead of its milestones.
	Verbose bool
	// DebugWeb turns gokrazy's own web interface on (TCP port 8080, with a
	// random password printed to Progress): for development images only.
	DebugWeb bool
	// LDFlags are extra linker flags for outpostd, after the version stamp
	// (e.g. "-X github.com/outpost-gw/outpost/internal/daemon.failHealthGate=test"
	// for an image whose health gate fails).
	LDFlags string
}

// InstanceConfig is the subset of gokrazy's config.json that we read and
// change; other fields pass through untouched.
type InstanceConfig map[string]any

// LoadInstanceConfig returns the committed gokrazy config of target.
func LoadInstanceConfig(target string) (InstanceConfig, error) {
	b, err := instanceConfigs.ReadFile(target + "/config.json")
	if err != nil {
		return nil, fmt.Errorf("unknown target %q (want one of %s)", target, strings.Join(Targets, ", "))
	}
	var c InstanceConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("image/%s/config.json: %w", target, err)
	}
	return c, nil
}

// Build writes a complete flashable image.
func Build(ctx context.Context, o Options) error {
	if o.Version == "" {
		o.Version = buildinfo.Version
	}
	if o.SizeBytes == 0 {
		o.SizeBytes = DefaultSizeBytes
	}
	if o.SizeBytes < 1300<<20 {
		return fmt.Errorf("image size %d bytes is too small: boot and two root partitions need 1.1 GB, plus room for /perm", o.SizeBytes)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Out == "" {
		return errors.New("no output file given")
	}
	if err := checkVersion(o.Version); err != nil {
		return err
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return fmt.Errorf("mkfs.ext4 not found (install e2fsprogs): it formats /perm: %w", err)
	}
	if o.RepoRoot == "" {
		if o.RepoRoot, err = FindRepoRoot(); err != nil {
			return err
		}
	}
	cfg, err := LoadInstanceConfig(o.Target)
	if err != nil {
		return err
	}
	var fleetJSON []byte
	if o.FleetFile != "" {
		f, err := config.LoadFleet(o.FleetFile)
		if err != nil {
			return err
		}
		if fleetJSON, err = json.MarshalIndent(f, "", "  "); err != nil {
			return err
		}
		applyFleet(cfg, f, fleetJSON)
	}
	if strings.ContainsAny(o.LDFlags, "\n'\"\\$`") {
		return fmt.Errorf("ldflags %q: quotes, backslashes and newlines are not passed through", o.LDFlags)
	}
	stampVersion(cfg, o.Version, o.LDFlags)
	if o.DebugWeb {
		pw := randomPassword()
		cfg["Update"] = map[string]any{"HTTPPassword": pw, "HTTPPort": "8080"}
		fmt.Fprintf(o.Progress, "      debug image: gokrazy web interface on port 8080, user gokrazy, password %s\n", pw)
	}

	step := stepper(o.Progress, 5)
	step("preparing the gokrazy instance for %s (outpostd %s)", o.Target, o.Version)
	work, err := os.MkdirTemp("", "outpost-image-")
	if err != nil {
		return err
	}
	if o.KeepWorkDir {
		fmt.Fprintf(o.Progress, "      work dir kept: %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	instance := "outpost-" + o.Target
	if err := writeInstance(filepath.Join(work, instance), cfg, o.RepoRoot); err != nil {
		return err
	}
	out, err := filepath.Abs(o.Out)
	if err != nil {
		return err
	}

	step("building the programs and writing the disk image (gok)")
	gokArgs := []string{
		"--parent_dir", work, "-i", instance,
		"overwrite", "--full", out,
		"--target_storage_bytes", strconv.FormatInt(o.SizeBytes, 10),
	}
	if err := runGok(ctx, o, gokArgs, filepath.Join(work, "gok.log")); err != nil {
		return err
	}

	step("putting the newline into cmdline.txt that gokrazy's testboot needs")
	if err := FixCmdline(out); err != nil {
		return err
	}

	step("formatting /perm (ext4)")
	if err := FormatPerm(ctx, mkfs, out); err != nil {
		return err
	}

	step("checking the partition table")
	l, err := ReadLayout(out)
	if err != nil {
		return err
	}
	if err := l.Check(); err != nil {
		return err
	}
	fmt.Fprintf(o.Progress, "done: %s (%s, %d MB; /perm grows to fill the disk on first boot)\n", o.Out, o.Target, o.SizeBytes>>20)
	return nil
}

func checkVersion(v string) error {
	if v == "" || len(v) > 64 || strings.ContainsAny(v, " \t\n'\"\\$`") {
		return fmt.Errorf("version %q: want a short token such as v1.2.3", v)
	}
	return nil
}

func pkgConfig(cfg InstanceConfig, pkg string) map[string]any {
	pcs, _ := cfg["PackageConfig"].(map[string]any)
	if pcs == nil {
		pcs = map[string]any{}
		cfg["PackageConfig"] = pcs
	}
	pc, _ := pcs[pkg].(map[string]any)
	if pc == nil {
		pc = map[string]any{}
		pcs[pkg] = pc
	}
	return pc
}

func stampVersion(cfg InstanceConfig, version, extraLDFlags string) {
	pc := pkgConfig(cfg, DaemonPackage)
	flags := buildinfo.LDFlag(version)
	if extra := strings.TrimSpace(extraLDFlags); extra != "" {
		flags += " " + extra
	}
	pc["GoBuildFlags"] = []any{"-ldflags=" + flags}
}

// applyFleet bakes the fleet file into the root file system and points
// gokrazy's NTP client at the fleet's own servers (and only at them).
func applyFleet(cfg InstanceConfig, f config.Fleet, fleetJSON []byte) {
	pc := pkgConfig(cfg, DaemonPackage)
	pc["ExtraFileContents"] = map[string]any{FleetPathInImage: string(fleetJSON) + "\n"}
	if len(f.NTPServers) == 0 {
		return
	}
	const ntp = "github.com/gokrazy/gokrazy/cmd/ntp"
	pkgs, _ := cfg["GokrazyPackages"].([]any)
	cfg["GokrazyPackages"] = append(pkgs, ntp)
	var args []any
	for _, s := range f.NTPServers {
		args = append(args, s)
	}
	pkgConfig(cfg, ntp)["CommandLineFlags"] = args
}

// writeInstance lays out a gokrazy instance directory: config.json and a
// builddir whose go.mod is this repository's go.mod (so every package in the
// image is built at the versions pinned there) plus a replace directive
// pointing at the checkout being built.
func writeInstance(dir string, cfg InstanceConfig, repo string) error {
	if err := os.MkdirAll(filepath.Join(dir, "builddir"), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(cfg, "", "    ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		return err
	}
	gomod, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		return err
	}
	mf, err := modfile.Parse("go.mod", gomod, nil)
	if err != nil {
		return fmt.Errorf("go.mod: %w", err)
	}
	if err := mf.AddModuleStmt("gokrazy/build/outpost"); err != nil {
		return err
	}
	if err := mf.AddRequire(Module, "v0.0.0-00010101000000-000000000000"); err != nil {
		return err
	}
	if err := mf.AddReplace(Module, "", repo, ""); err != nil {
		return err
	}
	out, err := mf.Format()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "builddir", "go.mod"), out, 0o644); err != nil {
		return err
	}
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "builddir", "go.sum"), sum, 0o644)
}

// FindRepoRoot walks up from the working directory to this module's go.mod.
func FindRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modfile.ModulePath(b) == Module {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("run this inside a checkout of %s (no go.mod of it above the working directory)", Module)
		}
		dir = parent
	}
}

func stepper(w io.Writer, n int) func(format string, args ...any) {
	i := 0
	start := time.Now()
	return func(format string, args ...any) {
		i++
		fmt.Fprintf(w, "[%d/%d %5.1fs] %s\n", i, n, time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
}

// randomPassword is the per-image password of a debug image's gokrazy web
// interface.
func randomPassword() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
