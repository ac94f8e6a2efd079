package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
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
