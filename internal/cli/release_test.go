package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

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
