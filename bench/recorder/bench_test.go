package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/testutil/tools"
)

func TestMain(m *testing.M) {
	if os.Getenv(floorEnv) != "" { // this test binary as the floor child
		os.Exit(floorMain())
	}
	os.Exit(m.Run())
}

// TestSmoke runs the benchmark for one camera and 2 s, so that it keeps
// working: outpostd records every frame sent, and both children's
// figures are read.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds outpostd and records for a few seconds")
	}
	tools.Need(t, "go")
	dir := t.TempDir()
	bin := filepath.Join(dir, "outpostd")
	if err := buildOutpostd(bin); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := run(ctx, options{N: 1, D: 2 * time.Second, Bitrate: 4_000_000, FPS: 25, GOP: 50, Width: 640, Height: 360,
		Outpostd: bin, Self: self, Dir: dir, Log: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table([]result{r}))
	if r.Recorded < 40 || r.Lost != 0 || r.Segments == 0 {
		t.Errorf("recorded %d of %d frames sent (lost %d) in %d segments", r.Recorded, r.Sent, r.Lost, r.Segments)
	}
	if r.CPU <= 0 && r.FloorCPU <= 0 || r.HWM == 0 || r.FloorHWM == 0 || r.FloorFrames == 0 {
		t.Errorf("figures not read: %+v", r)
	}
}

// TestSEI: sequence numbers survive the SEI framing, for every padding.
func TestSEI(t *testing.T) {
	for _, tc := range []struct {
		seq int64
		pad int
	}{{0, 0}, {1, 1}, {127, 200}, {128, 229}, {1 << 20, 230}, {1<<35 - 1, 20000}} {
		n := sei(tc.seq, tc.pad)
		avcc := append([]byte{byte(len(n) >> 24), byte(len(n) >> 16), byte(len(n) >> 8), byte(len(n))}, n...)
		avcc = append([]byte{0, 0, 0, 1, 0x41}, avcc...) // a P slice in front
		if got, ok := seqOf(avcc); !ok || got != tc.seq {
			t.Errorf("seq %d pad %d: got %d %v", tc.seq, tc.pad, got, ok)
		}
		for i := 2; i < len(n); i++ {
			if n[i-2] == 0 && n[i-1] == 0 && n[i] <= 3 {
				t.Errorf("seq %d pad %d: needs emulation prevention at %d", tc.seq, tc.pad, i)
			}
		}
	}
}
