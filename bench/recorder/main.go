// Command recorder measures outpostd recording N synthetic cameras: N
// cameras of 4 Mbit/s H264 (pure Go, 25 fps, a key frame every 2 s,
// numbered frames) are served on loopback by a gortsplib server in this
// process; a real outpostd child process records them beside a floor
// child (bare gortsplib readers appending each RTP payload to a file).
// CPU time (utime+stime) and peak RSS (VmHWM) come from /proc/PID of each
// child only. Frames recorded are counted from the segments by their
// sequence numbers: lost is what was sent after a camera's first recorded
// frame and is in no segment.
//
//	go run ./bench/recorder [-n 1,8,32] [-d 60s] [-bitrate 4000000]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func main() {
	if os.Getenv(floorEnv) != "" {
		os.Exit(floorMain())
	}
	ns := flag.String("n", "1,8,32", "camera counts, comma-separated")
	d := flag.Duration("d", 60*time.Second, "measured recording time per camera count")
	bitrate := flag.Int64("bitrate", 4_000_000, "bits per second per camera")
	size := flag.String("size", "640x360", "picture size (an I_PCM key frame must fit the GOP's budget)")
	bin := flag.String("outpostd", "", "outpostd binary (default: built from this checkout)")
	keep := flag.Bool("keep", false, "keep the scratch directory (recordings, logs)")
	env := flag.String("env", "", "extra environment for outpostd only, comma-separated (e.g. GOGC=200)")
	flag.Parse()
	var w, h int
	if _, err := fmt.Sscanf(*size, "%dx%d", &w, &h); err != nil {
		log.Fatalf("-size %q: want WxH", *size)
	}
	dir, err := os.MkdirTemp("", "recorder-bench-")
	if err != nil {
		log.Fatal(err)
	}
	if *keep {
		log.Printf("scratch: %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if *bin == "" {
		*bin = filepath.Join(dir, "outpostd")
		if err := buildOutpostd(*bin); err != nil {
			log.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	var results []result
	for _, s := range strings.Split(*ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 99 {
			log.Fatalf("-n: %q", s)
		}
		sub := filepath.Join(dir, fmt.Sprintf("n%d", n))
		os.MkdirAll(sub, 0o755)
		r, err := run(context.Background(), options{N: n, D: *d, Bitrate: *bitrate, FPS: 25, GOP: 50, Width: w, Height: h,
			Outpostd: *bin, Env: splitEnv(*env), Self: self, Dir: sub, Log: log.Printf})
		if err != nil {
			log.Fatalf("N=%d: %v", n, err)
		}
		results = append(results, r)
		if !*keep {
			os.RemoveAll(filepath.Join(sub, "data"))
			os.RemoveAll(filepath.Join(sub, "floor"))
		}
	}
	fmt.Printf("\n%d runs: N cameras × %.1f Mbit/s synthetic H264 (%s, 25 fps, GOP 50) on loopback, %v measured each; %d CPUs; load average at the end: %s\n",
		len(results), float64(*bitrate)/1e6, *size, *d, runtime.NumCPU(), loadavg())
	fmt.Print(table(results))
}

func buildOutpostd(out string) error {
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	cmd := exec.Command("go", "build", "-o", out, "./pkgs/outpostd")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(mod)))
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./pkgs/outpostd: %w\n%s", err, b)
	}
	return nil
}

func splitEnv(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func table(rs []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%4s %14s %11s %6s %15s %12s %12s %16s %5s %9s %9s\n",
		"N", "outpostd CPU s", "floor CPU s", "ratio", "outpostd VmHWM", "floor VmHWM", "frames sent", "frames recorded", "lost", "segments", "reconn.")
	for _, r := range rs {
		ratio := 0.0
		if r.FloorCPU > 0 {
			ratio = r.CPU.Seconds() / r.FloorCPU.Seconds()
		}
		fmt.Fprintf(&b, "%4d %14.2f %11.2f %5.2fx %12.1f MB %9.1f MB %12d %16d %5d %9d %9d\n",
			r.N, r.CPU.Seconds(), r.FloorCPU.Seconds(), ratio, mb(r.HWM), mb(r.FloorHWM), r.Sent, r.Recorded, r.Lost, r.Segments, r.Reconnects)
	}
	fmt.Fprintf(&b, "(CPU over the measured window; %% of one core = CPU s / window s. Server queue drops: %s.)\n", drops(rs))
	return b.String()
}

func drops(rs []result) string {
	var s []string
	for _, r := range rs {
		s = append(s, fmt.Sprintf("N=%d %d", r.N, r.ServerDrops))
	}
	return strings.Join(s, ", ")
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
