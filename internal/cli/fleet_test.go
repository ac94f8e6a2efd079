package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/tokens"
)

func TestFleetInitDevicesRevoke(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fleet")
	run := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := Main(context.Background(), args, &out, &out)
		return code, out.String()
	}
	if code, out := run("fleet", "init", "--dir", dir, "--name", "acme", "--broker-url", "mqtts://broker.acme.example:8883", "--ntp", "ntp.acme.example"); code != 0 || !strings.Contains(out, "fleet.json") {
		t.Fatalf("init: %d %s", code, out)
	}
	if code, out := run("fleet", "init", "--dir", dir, "--name", "acme", "--broker-url", "mqtts://b:8883"); code == 0 {
		t.Errorf("second init succeeded: %s", out)
	}
	if code, out := run("fleet", "devices", "--dir", dir); code != 0 || !strings.Contains(out, "DEVICE") {
		t.Errorf("devices: %d %s", code, out)
	}
	if code, out := run("fleet", "revoke", "op-nosuchbox00000000", "--dir", dir); code == 0 || !strings.Contains(out, "no such device") {
		t.Errorf("revoke unknown: %d %s", code, out)
	}
	if code, out := run("fleet", "claim", "--dir", dir); code != 2 {
		t.Errorf("claim without a code: %d %s", code, out)
	}
	if code, out := run("fleet", "devices", "--dir", filepath.Join(t.TempDir(), "none")); code == 0 || !strings.Contains(out, "fleet init") {
		t.Errorf("devices without a fleet: %d %s", code, out)
	}
}

func TestFleetToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fleet")
	var out bytes.Buffer
	if code := Main(context.Background(), []string{"fleet", "init", "--dir", dir, "--name", "acme", "--broker-url", "mqtts://b:8883"}, &out, &out); code != 0 {
		t.Fatal(out.String())
	}
	out.Reset()
	if code := Main(context.Background(), []string{"fleet", "token", "--dir", dir, "--user", "ana", "--device", "op-x", "--camera", "door", "--allow", "live,playback", "--ttl", "10m"}, &out, &out); code != 0 {
		t.Fatal(out.String())
	}
	f, _ := fleet.Open(dir)
	c, err := tokens.Parse(strings.TrimSpace(out.String()), f.SigningKey().Public().(ed25519.PublicKey))
	if err != nil || c.User != "ana" || c.Grants("door", "playback") != nil || c.Grants("door", "export") == nil {
		t.Fatalf("token: %+v %v", c, err)
	}
	out.Reset()
	if code := Main(context.Background(), []string{"fleet", "token", "--dir", dir, "--user", "ana", "--device", "op-x", "--camera", "door", "--allow", "fly"}, &out, &out); code != 2 {
		t.Errorf("unknown action accepted: %s", out.String())
	}
}

func TestOTAState(t *testing.T) {
	for _, c := range []struct {
		attrs map[string]string
		want  string
	}{
		{map[string]string{"version": "7", "phase": "downloading", "percent": "40"}, "v7 downloading 40%"},
		{map[string]string{"version": "7", "phase": "committed"}, "v7 committed"},
		{map[string]string{"version": "8", "phase": "rolled_back", "reason": "health gate: cloud link not online within 5m0s"}, "v8 rolled_back (health gate: cloud link not online withi…)"},
	} {
		if got := otaState(wire.Event{Kind: "ota", Attrs: c.attrs}); got != c.want {
			t.Errorf("%v: %q, want %q", c.attrs, got, c.want)
		}
	}
}
