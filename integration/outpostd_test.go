package integration

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/store"
)

func buildOutpostd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "outpostd")
	cmd := exec.Command("go", "build", "-o", bin, "./pkgs/outpostd")
	cmd.Dir = repoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestOutpostdProcess runs the real daemon binary: it serves /healthz, and
// SIGTERM stops it with exit code 0 and the store closed.
func TestOutpostdProcess(t *testing.T) {
	bin := buildOutpostd(t)
	dir := t.TempDir()
	port := freePort(t)
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`{"config_version":1,"lan":{"https_addr":"127.0.0.1:%d","http_addr":""},"watchdog":{"disabled":true},"recorder":{"live_rtsp_addr":"127.0.0.1:0"}}`, port)), 0o600)
	data := filepath.Join(dir, "data")
	cmd := exec.Command(bin, "-config", cfg, "-data", data, "-fleet", filepath.Join(dir, "nofleet.json"))
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 2 * time.Second}
	var ok bool
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && !ok; time.Sleep(50 * time.Millisecond) {
		if resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", port)); err == nil {
			resp.Body.Close()
			ok = resp.StatusCode == 200
		}
	}
	if !ok {
		t.Fatalf("outpostd did not answer /healthz; logs:\n%s", logs.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("outpostd exit after SIGTERM: %v; logs:\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("outpostd did not stop within 10s of SIGTERM; logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "store closed") {
		t.Errorf("no 'store closed' in the logs:\n%s", logs.String())
	}
	st, err := store.Open(data, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("store after SIGTERM: %v", err)
	}
	st.Close()
}

// TestOutpostdBadConfig: each kind of bad config stops the real binary with
// one line naming the field, a non-zero exit, and no data dir.
func TestOutpostdBadConfig(t *testing.T) {
	bin := buildOutpostd(t)
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", `{"config_version":1,"lan":{"htps_addr":":443"}}`, `field "lan.htps_addr": unknown field`},
		{"wrong type", `{"config_version":1,"lan":{"https_addr":443}}`, `field "lan.https_addr": wrong type: want a string, got a number`},
		{"missing required", `{"lan":{}}`, `field "config_version": required value missing`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "config.json")
			os.WriteFile(cfg, []byte(tc.doc), 0o600)
			data := filepath.Join(dir, "data")
			var stderr bytes.Buffer
			cmd := exec.Command(bin, "-config", cfg, "-data", data)
			cmd.Stderr = &stderr
			err := cmd.Run()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
				t.Fatalf("exit: %v", err)
			}
			out := strings.TrimRight(stderr.String(), "\n")
			if strings.Count(out, "\n") != 0 || !strings.Contains(out, tc.want) || !strings.Contains(out, cfg) {
				t.Errorf("stderr = %q, want one line with %q and the file name", out, tc.want)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("data dir touched: %v", err)
			}
		})
	}
}
