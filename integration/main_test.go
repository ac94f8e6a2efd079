// Package integration holds end-to-end tests against real parts: the outpost
// CLI built as a real binary, disk images built with it, and the amd64 image
// booted under qemu. They are slow (minutes) and run in CI, where a missing
// tool is a failure, not a skip.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/testutil/tools"
)

var (
	outpostOnce sync.Once
	outpostBin  string
	outpostErr  error
	binDir      string
)

func TestMain(m *testing.M) {
	var err error
	binDir, err = os.MkdirTemp("", "outpost-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// inCI reports whether missing tools must fail tests rather than skip them.
func inCI() bool { return os.Getenv("CI") != "" }

// requireTools fails (in CI) or skips (elsewhere) when a tool is missing.
func requireTools(t *testing.T, names ...string) { t.Helper(); tools.Need(t, names...) }

// outpost builds the host CLI once, as a real binary.
func outpost(t *testing.T) string {
	t.Helper()
	outpostOnce.Do(func() {
		outpostBin = filepath.Join(binDir, "outpost")
		cmd := exec.Command("go", "build", "-o", outpostBin, "./cmd/outpost")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			outpostErr = fmt.Errorf("go build ./cmd/outpost: %v\n%s", err, out)
		}
	})
	if outpostErr != nil {
		t.Fatal(outpostErr)
	}
	return outpostBin
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd)
}

// buildImage runs `outpost image build` and returns the image path.
func buildImage(t *testing.T, target, version string, extra ...string) string {
	t.Helper()
	requireTools(t, "mkfs.ext4")
	img := filepath.Join(t.TempDir(), target+".img")
	args := append([]string{"image", "build", "--target", target, "--out", img, "--version", version}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, outpost(t), args...)
	cmd.Dir = repoRoot()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("outpost %v: %v\n%s", args, err, out.String())
	}
	t.Logf("built %s image in %.1fs", target, time.Since(start).Seconds())
	return img
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}
