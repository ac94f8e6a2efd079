package integration

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/image"
	"github.com/outpost-gw/outpost/ota/manifest"
)

// runOutpost runs the real CLI binary and fails the test on an error.
func runOutpost(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, outpost(t), args...)
	cmd.Dir = repoRoot()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("outpost %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

// buildRelease runs `outpost release build` and returns the release.
func buildRelease(t *testing.T, target string, version string, extra ...string) (string, image.Release) {
	t.Helper()
	requireTools(t, "mkfs.ext4")
	dir := filepath.Join(t.TempDir(), "release-"+version)
	start := time.Now()
	runOutpost(t, 10*time.Minute, append([]string{"release", "build", "--target", target, "--version", version, "--out", dir}, extra...)...)
	t.Logf("built release %s for %s in %.1fs", version, target, time.Since(start).Seconds())
	r, err := image.LoadRelease(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, r
}

// TestReleaseBuildSign: `outpost release build` for amd64 writes a disk image
// and the partition images cut from it — root.img is root A's squashfs (its
// own length, not the partition's), boot.img the whole boot partition with
// the testboot newline in cmdline.txt — with the lengths and digests
// release.json names; --ldflags reaches outpostd; `release sign --release`
// turns it into a manifest the box's verifier accepts.
func TestReleaseBuildSign(t *testing.T) {
	requireTools(t, "mkfs.ext4", "unsquashfs")
	const marker = "itest-ldflags-marker"
	dir, r := buildRelease(t, "amd64", "v3", "--ldflags", "-X github.com/outpost-gw/outpost/internal/daemon.failHealthGate="+marker)
	if r.Version != 3 || r.ImageVersion != "v3" || r.Target != "amd64" || len(r.Artifacts) != 2 {
		t.Fatalf("release.json = %+v", r)
	}
	disk := filepath.Join(dir, r.Disk)
	l, err := image.ReadLayout(disk)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := os.Open(disk)
	defer d.Close()
	for _, a := range r.Artifacts {
		p, _ := l.Partition(map[string]int{"boot": 1, "root": 2}[a.Name])
		b, err := os.ReadFile(filepath.Join(dir, a.File))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		inDisk := sha256.New()
		io.Copy(inDisk, io.NewSectionReader(d, p.Offset(), int64(len(b))))
		t.Logf("%s: %d bytes (partition %d MB), sha256 %s", a.Name, len(b), p.Size()>>20, a.SHA256)
		if int64(len(b)) != a.Length || hex.EncodeToString(sum[:]) != a.SHA256 || !bytes.Equal(inDisk.Sum(nil), sum[:]) {
			t.Errorf("%s: file, release.json and disk image disagree", a.Name)
		}
		switch a.Name {
		case "root":
			if !bytes.HasPrefix(b, []byte("hsqs")) || len(b)%4096 != 0 || int64(len(b)) >= p.Size()/4 {
				t.Errorf("root.img: %d bytes, want a 4 KiB-padded squashfs well below the %d byte partition", len(b), p.Size())
			}
			bin, err := exec.Command("unsquashfs", "-cat", filepath.Join(dir, a.File), "/user/outpostd").Output()
			if err != nil {
				t.Fatalf("unsquashfs -cat outpostd: %v", err)
			}
			if !bytes.Contains(bin, []byte(marker)) || !bytes.Contains(bin, []byte("v3")) {
				t.Error("outpostd in root.img lacks the --ldflags value")
			}
		case "boot":
			if int64(len(b)) != p.Size() {
				t.Errorf("boot.img is %d bytes, the partition %d", len(b), p.Size())
			}
		}
	}

	keys := filepath.Join(t.TempDir(), "keys")
	runOutpost(t, time.Minute, "release", "keygen", "--dir", keys)
	runOutpost(t, time.Minute, "release", "sign", "--dir", keys, "--release", dir, "--url-base", "https://updates.example/v3/")
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
	md, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Verify(root, kd, md, manifest.State{Floor: 2, Target: "amd64", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := m.Artifact("root")
	if err != nil || a.URL != "https://updates.example/v3/root.img" || hex.EncodeToString(a.SHA256[:]) != r.Artifacts[0].SHA256 {
		t.Errorf("signed root artifact %+v %v", a, err)
	}
	if _, err := m.Artifact("boot"); err == nil {
		t.Error("boot signed without --include boot")
	}
}

// TestReleaseBuildRPi: the Pi release cuts the same way, and its outpostd
// is an arm64 program (ELF machine AArch64).
func TestReleaseBuildRPi(t *testing.T) {
	requireTools(t, "mkfs.ext4", "unsquashfs")
	dir, r := buildRelease(t, "rpi", "4")
	if r.Target != "rpi" || r.Version != 4 || len(r.Artifacts) != 2 || r.Artifacts[0].Name != "root" {
		t.Fatalf("release.json = %+v", r)
	}
	root := filepath.Join(dir, r.Artifacts[0].File)
	bin, err := exec.Command("unsquashfs", "-cat", root, "/user/outpostd").Output()
	if err != nil {
		t.Fatalf("unsquashfs -cat outpostd: %v", err)
	}
	if len(bin) < 20 || string(bin[:4]) != "\x7fELF" || bin[18] != 183 {
		t.Errorf("outpostd in the Pi root is not an AArch64 ELF program")
	}
	t.Logf("rpi root.img: %d bytes", r.Artifacts[0].Length)
}
