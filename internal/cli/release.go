package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-gw/outpost/image"
	"github.com/outpost-gw/outpost/internal/atomicfile"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/internal/rollout"
	"github.com/outpost-gw/outpost/ota/manifest"
)

// Release key directory layout: root-N.key and release.key hold base64
// Ed25519 seeds (mode 0600; keep root keys offline), keys.json the signed
// release-keys document, ota_root.json what goes into the fleet file.

func runReleaseKeygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("release keygen", stderr)
	dir := fs.String("dir", "release-keys", "directory for the keys")
	n := fs.Int("root", 3, "number of root keys")
	k := fs.Int("threshold", 2, "root signatures required")
	valid := fs.Duration("valid", 365*24*time.Hour, "validity of the release-keys document")
	if err := parse(fs, args); err != nil {
		return err
	}
	root, rootPrivs, err := manifest.NewRootKeys(*n, *k)
	if err != nil {
		return err
	}
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return err
	}
	doc, err := manifest.SignKeys(rootPrivs[:*k], manifest.KeysDocument{Version: 1, Expires: time.Now().Add(*valid).UTC(), Threshold: 1, Keys: []ed25519.PublicKey{pub}})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	for i, p := range rootPrivs {
		if err := writeKey(filepath.Join(*dir, fmt.Sprintf("root-%d.key", i+1)), p); err != nil {
			return err
		}
	}
	if err := writeKey(filepath.Join(*dir, "release.key"), priv); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(*dir, "keys.json"), doc, 0o644); err != nil {
		return err
	}
	var o struct {
		Keys      []string `json:"keys"`
		Threshold int      `json:"threshold"`
	}
	o.Threshold = root.Threshold
	for _, k := range root.Keys {
		o.Keys = append(o.Keys, base64.StdEncoding.EncodeToString(k))
	}
	b, _ := json.MarshalIndent(map[string]any{"ota_root": o}, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(*dir, "ota_root.json"), b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (keep root-*.key offline); add to the fleet file:\n%s\n", *dir, b)
	return nil
}

func writeKey(path string, k ed25519.PrivateKey) error {
	return atomicfile.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k.Seed())+"\n"), 0o600)
}

func readKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%s: not a base64 Ed25519 seed", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func runReleaseSign(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("release sign", stderr)
	dir := fs.String("dir", "release-keys", "key directory (release.key)")
	release := fs.String("release", "", "release directory from `outpost release build` (gives version, target and artifacts)")
	urlBase := fs.String("url-base", "", "with --release: https URL the release directory's files are served under")
	include := fs.String("include", "root", "with --release: artifacts to sign, comma-separated (root, boot)")
	version := fs.Uint64("version", 0, "release version (above every box's floor)")
	target := fs.String("target", "", "amd64 or rpi")
	var arts listFlag
	fs.Var(&arts, "artifact", "NAME=FILE=URL (repeat; root is required for an update)")
	expires := fs.Duration("expires", 30*24*time.Hour, "manifest validity")
	out := fs.String("out", "", "output file (default: manifest.json, or RELEASE/manifest.json)")
	if err := parse(fs, args); err != nil {
		return err
	}
	type art struct{ name, file, url, sum string }
	var todo []art
	if *release != "" {
		if len(arts) > 0 {
			return fmt.Errorf("%w: --release and --artifact exclude each other", errUsage)
		}
		if !strings.HasPrefix(*urlBase, "https://") {
			return fmt.Errorf("%w: --release needs --url-base https://…", errUsage)
		}
		r, err := image.LoadRelease(*release)
		if err != nil {
			return err
		}
		if *version != 0 && *version != r.Version || *target != "" && *target != r.Target {
			return fmt.Errorf("%w: --version/--target contradict %s (v%d for %s)", errUsage, image.ReleaseFile, r.Version, r.Target)
		}
		*version, *target = r.Version, r.Target
		for _, name := range strings.Split(*include, ",") {
			i := slices.IndexFunc(r.Artifacts, func(a image.ReleaseArtifact) bool { return a.Name == name })
			if i < 0 {
				return fmt.Errorf("%w: --include %s: the release has no such artifact", errUsage, name)
			}
			a := r.Artifacts[i]
			todo = append(todo, art{a.Name, filepath.Join(*release, a.File), strings.TrimSuffix(*urlBase, "/") + "/" + a.File, a.SHA256})
		}
		if *out == "" {
			*out = filepath.Join(*release, "manifest.json")
		}
	}
	for _, a := range arts {
		parts := strings.SplitN(a, "=", 3)
		if len(parts) != 3 {
			return fmt.Errorf("%w: --artifact %q: want NAME=FILE=URL", errUsage, a)
		}
		todo = append(todo, art{parts[0], parts[1], parts[2], ""})
	}
	if *version == 0 || *target == "" || len(todo) == 0 {
		return fmt.Errorf("%w: --release, or --version, --target and --artifact, are required", errUsage)
	}
	if *out == "" {
		*out = "manifest.json"
	}
	priv, err := readKey(filepath.Join(*dir, "release.key"))
	if err != nil {
		return err
	}
	m := manifest.Manifest{Version: *version, Target: *target, Expires: time.Now().Add(*expires).UTC()}
	for _, a := range todo {
		f, err := os.Open(a.file)
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		sum := manifest.Digest(h.Sum(nil))
		if a.sum != "" && a.sum != hex.EncodeToString(sum[:]) {
			return fmt.Errorf("%s changed since the release was built (digest differs from %s): rebuild it", a.file, image.ReleaseFile)
		}
		m.Artifacts = append(m.Artifacts, manifest.Artifact{Name: a.name, URL: a.url, Length: n, SHA256: sum})
	}
	doc, err := manifest.SignManifest([]ed25519.PrivateKey{priv}, m)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(*out, doc, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "signed v%d for %s: %s (%d artifacts)\n", m.Version, m.Target, *out, len(m.Artifacts))
	return nil
}

// runReleaseBuild builds a release's disk image and cuts out the partition
// images an update streams, for `outpost release sign --release DIR`.
func runReleaseBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("release build", stderr)
	var o image.Options
	fs.StringVar(&o.Target, "target", "", "hardware target: amd64 or rpi")
	version := fs.String("version", "", "release number, e.g. 3 or v3 (stamped into outpostd as v3)")
	out := fs.String("out", "", "release directory to write (disk.img, root.img, boot.img, release.json)")
	fs.StringVar(&o.FleetFile, "fleet", "", "fleet file to bake in (must pin ota_root for boxes to accept updates)")
	fs.StringVar(&o.LDFlags, "ldflags", "", "extra linker flags for outpostd (tests: -X github.com/outpost-gw/outpost/internal/daemon.failHealthGate=why)")
	fs.Int64Var(&o.SizeBytes, "size", image.DefaultSizeBytes, "disk image size in bytes")
	fs.BoolVar(&o.Verbose, "v", false, "show all of gok's output")
	if err := parse(fs, args); err != nil {
		return err
	}
	if !slices.Contains(image.Targets, o.Target) {
		return fmt.Errorf("%w: --target must be one of %v", errUsage, image.Targets)
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	n, v, err := image.ParseReleaseVersion(*version)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	o.Version = v
	o.Progress = stdout
	r, err := image.BuildRelease(ctx, *out, n, o)
	if err != nil {
		return err
	}
	for _, a := range r.Artifacts {
		fmt.Fprintf(stdout, "  %s: %s, %d bytes, sha256 %s\n", a.Name, filepath.Join(*out, a.File), a.Length, a.SHA256)
	}
	fmt.Fprintf(stdout, "release v%d for %s in %s; next: outpost release sign --release %s --url-base https://…\n", r.Version, r.Target, *out, *out)
	return nil
}

// runReleasePush offers a signed release to a box or a group in stages (see
// internal/rollout): the canary set first, then the rest in waves, halting
// by itself when boxes fail.
func runReleasePush(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("release push", stderr)
	dir := fleetDirFlag(fs)
	broker := fs.String("broker", "", "broker URL (default: the fleet file's)")
	to := fs.String("to", "", "DEVICE, or group:NAME")
	release := fs.String("release", "", "release directory (its manifest.json, from `release sign --release`)")
	manifestFile := fs.String("manifest", "", "signed manifest (default: RELEASE/manifest.json)")
	keysFile := fs.String("keys", "release-keys/keys.json", "signed release-keys document")
	canary := fs.String("canary", "1", "canary set, offered first: a number of the boxes, or group:NAME")
	maxFailures := fs.Int("max-failures", 0, "failures tolerated after the canary stage; one more halts")
	wave := fs.Int("wave", 10, "boxes offered at once after the canary stage")
	timeout := fs.Duration("timeout", 20*time.Minute, "per box, from offer to outcome (download, trial boot, health gate)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *to == "" || *manifestFile == "" && *release == "" {
		return fmt.Errorf("%w: --to and --release (or --manifest) are required", errUsage)
	}
	if *manifestFile == "" {
		*manifestFile = filepath.Join(*release, "manifest.json")
	}
	man, err := os.ReadFile(*manifestFile)
	if err != nil {
		return err
	}
	keys, err := os.ReadFile(*keysFile)
	if err != nil {
		return err
	}
	f, op, err := connectOperator(ctx, *dir, *broker, operator.Options{})
	if err != nil {
		return err
	}
	defer op.Close()
	targets := []string{*to}
	if g, ok := strings.CutPrefix(*to, "group:"); ok {
		if targets, err = f.Group(g); err != nil {
			return err
		}
		if len(targets) == 0 {
			return fmt.Errorf("group %q has no active boxes", g)
		}
	}
	slices.Sort(targets)
	plan := rollout.Plan{Wave: *wave, MaxFailures: *maxFailures, Timeout: *timeout}
	if g, ok := strings.CutPrefix(*canary, "group:"); ok {
		members, err := f.Group(g)
		if err != nil {
			return err
		}
		for _, d := range targets {
			if slices.Contains(members, d) {
				plan.Canary = append(plan.Canary, d)
			} else {
				plan.Rest = append(plan.Rest, d)
			}
		}
		if len(plan.Canary) == 0 {
			return fmt.Errorf("%w: canary group %q has none of the boxes to update", errUsage, g)
		}
	} else {
		n, err := strconv.Atoi(*canary)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: --canary %q: want a number or group:NAME", errUsage, *canary)
		}
		n = min(n, len(targets))
		plan.Canary, plan.Rest = targets[:n], targets[n:]
	}
	link, err := rollout.NewLink(op, keys, man)
	if err != nil {
		return err
	}
	_, err = rollout.Run(ctx, link, plan, stdout)
	return err
}
