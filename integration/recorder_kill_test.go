package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/recorder/democam"
	"github.com/outpost-gw/outpost/recorder/segment"
)

// TestOutpostdKill9MidRecording: the real daemon records a camera; SIGKILL
// lands in the middle of a segment. Every closed segment plays, the open
// one is repaired back to its last complete part, and at most about a
// second (one part) is lost. Done three times on the same data dir.
func TestOutpostdKill9MidRecording(t *testing.T) {
	requireTools(t, "ffmpeg")
	bin := buildOutpostd(t)
	cam, err := democam.Start(democam.Options{FPS: 10, GOP: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	dir := t.TempDir()
	port := freePort(t)
	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`{"config_version":1,"lan":{"https_addr":"127.0.0.1:%d","http_addr":""},"watchdog":{"disabled":true},
		"recorder":{"cameras":[{"id":"door","url":%q}],"segment_duration":"4s","part_duration":"1s","min_free_mb":0,"live_rtsp_addr":"127.0.0.1:0"}}`, port, cam.URL)), 0o600)
	data := filepath.Join(dir, "data")
	root := filepath.Join(data, "recordings")
	var logs bytes.Buffer
	for round := range 3 {
		cmd := exec.Command(bin, "-config", cfgPath, "-data", data, "-fleet", filepath.Join(dir, "none.json"))
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(6500+700*round) * time.Millisecond) // mid-segment
		cmd.Process.Signal(syscall.SIGKILL)
		killed := time.Now()
		cmd.Wait()

		infos, err := segment.Scan(root) // what the daemon does at start-up
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) == 0 {
			t.Fatalf("round %d: no recordings; logs:\n%s", round, logs.String())
		}
		sort.Slice(infos, func(i, j int) bool { return infos[i].Start.Before(infos[j].Start) })
		last := infos[len(infos)-1]
		lost := killed.Sub(last.Start.Add(last.Duration))
		t.Logf("round %d: %d segments; the open one repaired to %.1fs (trimmed %d bytes); lost %.2fs before the kill",
			round, len(infos), last.Duration.Seconds(), last.Trimmed, lost.Seconds())
		// One part (1 s) plus the camera's pacing and the time to write a part.
		if lost > 2*time.Second {
			t.Errorf("round %d: %.2fs of video lost at the power cut, want about one part (1 s)", round, lost.Seconds())
		}
		for _, in := range infos {
			out, err := exec.Command("ffmpeg", "-v", "error", "-xerror", "-i", in.Path, "-f", "null", "-").CombinedOutput()
			if err != nil {
				t.Errorf("round %d: %s does not play: %v\n%s", round, in.Path, err, out)
			}
		}
	}
}
