package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/outpost-gw/outpost/internal/atomicfile"
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
	version := fs.Uint64("version", 0, "release version (above every box's floor)")
	target := fs.String("target", "", "amd64 or rpi")
	var arts listFlag
	fs.Var(&arts, "artifact", "NAME=FILE=URL (repeat; root is required for an update)")
	expires := fs.Duration("expires", 30*24*time.Hour, "manifest validity")
	out := fs.String("out", "manifest.json", "output file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *version == 0 || *target == "" || len(arts) == 0 {
		return fmt.Errorf("%w: --version, --target and --artifact are required", errUsage)
	}
	priv, err := readKey(filepath.Join(*dir, "release.key"))
	if err != nil {
		return err
	}
	m := manifest.Manifest{Version: *version, Target: *target, Expires: time.Now().Add(*expires).UTC()}
	for _, a := range arts {
		parts := strings.SplitN(a, "=", 3)
		if len(parts) != 3 {
			return fmt.Errorf("%w: --artifact %q: want NAME=FILE=URL", errUsage, a)
		}
		f, err := os.Open(parts[1])
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		m.Artifacts = append(m.Artifacts, manifest.Artifact{Name: parts[0], URL: parts[2], Length: n, SHA256: manifest.Digest(h.Sum(nil))})
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
