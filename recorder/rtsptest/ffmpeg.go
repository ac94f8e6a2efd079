package rtsptest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/testutil/tools"
)

// ErrNoFFmpeg reports that no ffmpeg binary is on $PATH.
var ErrNoFFmpeg = errors.New("rtsptest: ffmpeg not found")

// NeedFFmpeg skips the test when ffmpeg is missing, unless the environment
// variable CI is set: there (CI installs ffmpeg) it fails instead.
func NeedFFmpeg(t testing.TB) {
	t.Helper()
	tools.Need(t, "ffmpeg")
}

// FFmpegConfig describes a synthetic camera made of ffmpeg's test sources.
// The zero value is 320x240 H264 at 25 fps, a key frame every second and
// two B-frames (so DTS ≠ PTS), no audio.
type FFmpegConfig struct {
	Size string // WxH, default "320x240"
	FPS  int    // default 25
	// Source replaces the lavfi video source graph, e.g.
	// "testsrc=size=1280x720:rate=25,noise=alls=30:allf=t" for a stream
	// that does not compress to nothing.
	Source  string
	Video   string // encoder: "libx264" (default) or "libx265"
	GOP     int    // frames between key frames, default FPS
	BFrames int    // default 2; negative for none
	Bitrate string // e.g. "4M"; default: the encoder's choice
	// Audio encoder, "" for none: "aac", "libopus" or "pcm_mulaw".
	Audio string
}

// FFmpeg is an ffmpeg process publishing to an RTSP server over TCP.
type FFmpeg struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	err  error
}

// StartFFmpeg runs ffmpeg (-re, real time) publishing to url until Stop or
// ctx ends. It returns ErrNoFFmpeg when ffmpeg is missing.
func StartFFmpeg(ctx context.Context, url string, cfg FFmpegConfig) (*FFmpeg, error) {
	bin, err := exec.LookPath("ffmpeg")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoFFmpeg, err)
	}
	if cfg.Size == "" {
		cfg.Size = "320x240"
	}
	if cfg.FPS == 0 {
		cfg.FPS = 25
	}
	if cfg.Video == "" {
		cfg.Video = "libx264"
	}
	if cfg.GOP == 0 {
		cfg.GOP = cfg.FPS
	}
	if cfg.BFrames == 0 {
		cfg.BFrames = 2
	}
	cfg.BFrames = max(cfg.BFrames, 0)
	if cfg.Source == "" {
		cfg.Source = "testsrc=size=" + cfg.Size + ":rate=" + strconv.Itoa(cfg.FPS)
	}
	args := []string{"-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", cfg.Source}
	if cfg.Audio != "" {
		rate := "48000"
		if cfg.Audio == "pcm_mulaw" {
			rate = "8000"
		}
		args = append(args, "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate="+rate)
	}
	args = append(args, "-c:v", cfg.Video, "-preset", "superfast", "-pix_fmt", "yuv420p",
		"-g", strconv.Itoa(cfg.GOP), "-bf", strconv.Itoa(cfg.BFrames))
	if cfg.Video == "libx265" {
		args = append(args, "-x265-params", "log-level=error")
	}
	if cfg.Bitrate != "" {
		args = append(args, "-b:v", cfg.Bitrate, "-maxrate", cfg.Bitrate, "-bufsize", cfg.Bitrate)
	}
	if cfg.Audio != "" {
		args = append(args, "-c:a", cfg.Audio, "-ac", "1")
	}
	args = append(args, "-f", "rtsp", "-rtsp_transport", "tcp", url)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 3 * time.Second
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("rtsptest: start ffmpeg: %w", err)
	}
	f := &FFmpeg{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		f.mu.Lock()
		f.err = err
		f.mu.Unlock()
		close(f.done)
	}()
	return f, nil
}

// Done is closed when ffmpeg has exited.
func (f *FFmpeg) Done() <-chan struct{} { return f.done }

// Stop interrupts ffmpeg (it sends TEARDOWN), kills it after 3 s, and
// returns how it exited.
func (f *FFmpeg) Stop() error {
	select {
	case <-f.done:
	default:
		f.cmd.Process.Signal(os.Interrupt)
		select {
		case <-f.done:
		case <-time.After(3 * time.Second):
			f.cmd.Process.Kill()
			<-f.done
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
