package ingest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-gw/outpost/recorder/rtsptest"
)

// The private test source must be valid H264: ffmpeg decodes it strictly.
func TestTestSourceDecodes(t *testing.T) {
	rtsptest.NeedFFmpeg(t)
	st := testH264(64, 48, 10, 25)
	var annexb []byte
	for range 2 {
		for i, f := range st.Frames {
			if i == 0 {
				f = append([][]byte{st.SPS, st.PPS}, f...)
			}
			for _, n := range f {
				annexb = append(annexb, 0, 0, 0, 1)
				annexb = append(annexb, n...)
			}
		}
	}
	p := filepath.Join(t.TempDir(), "src.h264")
	if err := os.WriteFile(p, annexb, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ffmpeg", "-v", "error", "-xerror", "-i", p, "-f", "null", "-").CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	out, err = exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames,width,height", "-of", "csv=p=0", p).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "64,48,20" {
		t.Fatalf("ffprobe: %v %q", err, out)
	}
}
