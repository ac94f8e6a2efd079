package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/image"
	"github.com/outpost-gw/outpost/ota/manifest"
)

func TestReleaseKeygenSign(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	var out, errb bytes.Buffer
	if rc := Main(context.Background(), []string{"release", "keygen", "--dir", keys}, &out, &errb); rc != 0 {
		t.Fatalf("keygen rc %d: %s", rc, errb.String())
	}
	img := filepath.Join(dir, "root.img")
	os.WriteFile(img, []byte("root image"), 0o644)
	mf := filepath.Join(dir, "manifest.json")
	if rc := Main(context.Background(), []string{"release", "sign", "--dir", keys, "--version", "7", "--target", "amd64",
		"--artifact", "root=" + img + "=https://updates.example/root.img", "--out", mf}, &out, &errb); rc != 0 {
		t.Fatalf("sign rc %d: %s", rc, errb.String())
	}
	var o struct {
		OTARoot struct {
			Keys      []string `json:"keys"`
			Threshold int      `json:"threshold"`
		} `json:"ota_root"`
	}
	b, _ := os.ReadFile(filepath.Join(keys, "ota_root.json"))
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	root := manifest.RootOfTrust{Threshold: o.OTARoot.Threshold}
	for _, k := range o.OTARoot.Keys {
		p, _ := base64.StdEncoding.DecodeString(k)
		root.Keys = append(root.Keys, ed25519.PublicKey(p))
	}
	kd, _ := os.ReadFile(filepath.Join(keys, "keys.json"))
	md, _ := os.ReadFile(mf)
	m, err := manifest.Verify(root, kd, md, manifest.State{Floor: 6, Target: "amd64", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if a, err := m.Artifact("root"); err != nil || a.Length != 10 {
		t.Fatalf("artifact %+v %v", a, err)
	}
}

// TestReleaseSignFromBuild: `release sign --release DIR` takes version,
// target and files from release.json, signs only --include'd artifacts with
// URLs under --url-base, and refuses a file that changed since the build.
func TestReleaseSignFromBuild(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	var out, errb bytes.Buffer
	if rc := Main(context.Background(), []string{"release", "keygen", "--dir", keys}, &out, &errb); rc != 0 {
		t.Fatalf("keygen rc %d: %s", rc, errb.String())
	}
	rel := filepath.Join(dir, "rel")
	os.MkdirAll(rel, 0o755)
	os.WriteFile(filepath.Join(rel, "root.img"), []byte("root"), 0o644)
	os.WriteFile(filepath.Join(rel, "boot.img"), []byte("boot"), 0o644)
	hexsum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	r := image.Release{Version: 4, ImageVersion: "v4", Target: "rpi", Disk: "disk.img", Artifacts: []image.ReleaseArtifact{
		{Name: "root", File: "root.img", Length: 4, SHA256: hexsum("root")},
		{Name: "boot", File: "boot.img", Length: 4, SHA256: hexsum("boot")},
	}}
	b, _ := json.Marshal(r)
	os.WriteFile(filepath.Join(rel, image.ReleaseFile), b, 0o644)
	sign := func(extra ...string) (int, string) {
		errb.Reset()
		rc := Main(context.Background(), append([]string{"release", "sign", "--dir", keys, "--release", rel}, extra...), &out, &errb)
		return rc, errb.String()
	}
	if rc, e := sign("--url-base", "https://u.example/r4", "--include", "root,boot"); rc != 0 {
		t.Fatalf("sign rc %d: %s", rc, e)
	}
	md, _ := os.ReadFile(filepath.Join(rel, "manifest.json"))
	m, _, err := manifest.ParseManifestUnverified(md)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != 4 || m.Target != "rpi" || len(m.Artifacts) != 2 || m.Artifacts[0].URL != "https://u.example/r4/root.img" || m.Artifacts[1].Length != 4 {
		t.Errorf("manifest %+v", m)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--url-base", "http://u.example"}, "https"},
		{[]string{"--url-base", "https://u.example", "--version", "5"}, "contradict"},
		{[]string{"--url-base", "https://u.example", "--include", "kernel"}, "no such artifact"},
	} {
		if rc, e := sign(tc.args...); rc == 0 || !strings.Contains(e, tc.want) {
			t.Errorf("sign %v: rc %d %q, want an error naming %q", tc.args, rc, e, tc.want)
		}
	}
	os.WriteFile(filepath.Join(rel, "root.img"), []byte("evil"), 0o644)
	if rc, e := sign("--url-base", "https://u.example"); rc == 0 || !strings.Contains(e, "changed") {
		t.Errorf("sign of a changed root.img: rc %d %q", rc, e)
	}
}
