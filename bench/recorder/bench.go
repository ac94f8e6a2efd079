package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/outpost-gw/outpost/recorder/rtsptest"
)

// options of one run.
type options struct {
	N             int
	D             time.Duration
	Bitrate       int64
	FPS, GOP      int
	Width, Height int
	Outpostd      string   // the daemon binary
	Env           []string // added to outpostd's environment
	Self          string   // this program, run again as the floor
	Dir           string   // scratch space
	Log           func(format string, args ...any)
}

// result of one run.
type result struct {
	N                    int
	CPU, FloorCPU        time.Duration // over the measured window
	Window               time.Duration
	HWM, FloorHWM        int64 // bytes
	Sent, Recorded, Lost int64 // frames
	FloorFrames          int64
	ServerDrops          uint64
	Segments, Reconnects int
}

// proc is a child process whose CPU time and peak RSS are read from /proc.
type proc struct {
	cmd *exec.Cmd
}

func (p proc) cpu() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)             // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64)             // field 15
	return time.Duration(ut+st) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

func (p proc) hwm() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM")
}

func (p proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// run records N cameras with outpostd beside the floor for o.D and
// counts what was recorded.
func run(ctx context.Context, o options) (result, error) {
	res := result{N: o.N}
	st, err := newStream(o.Width, o.Height, o.FPS, o.GOP, o.Bitrate)
	if err != nil {
		return res, err
	}
	srv, err := rtsptest.StartServer(rtsptest.ServerConfig{WriteQueueSize: 8192})
	if err != nil {
		return res, err
	}
	defer srv.Close()
	var cams []*camera
	defer func() {
		for _, c := range cams {
			c.Close()
		}
	}()
	var urls []string
	type camCfg struct {
		ID  string `json:"id"`
		URL string `json:"url"`
	}
	var camCfgs []camCfg
	for i := range o.N {
		u := srv.URL(fmt.Sprintf("cam%02d", i))
		c, err := startCamera(u, st)
		if err != nil {
			return res, err
		}
		cams = append(cams, c)
		urls = append(urls, u)
		camCfgs = append(camCfgs, camCfg{fmt.Sprintf("cam%02d", i), u})
	}

	// outpostd, as on the box but with its LAN endpoint on loopback and
	// without a fleet or the live restream.
	port, err := freePort()
	if err != nil {
		return res, err
	}
	camsJSON, _ := json.Marshal(camCfgs)
	cfgPath := filepath.Join(o.Dir, "config.json")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`{"config_version":1,"log_level":"warn","lan":{"https_addr":"127.0.0.1:%d","http_addr":""},
		"watchdog":{"disabled":true},"storage":{"grow_perm":false},
		"recorder":{"cameras":%s,"segment_duration":"10s","part_duration":"1s","min_free_mb":0,"live_rtsp_addr":"127.0.0.1:0"}}`, port, camsJSON)), 0o600)
	data := filepath.Join(o.Dir, "data")
	logf, err := os.Create(filepath.Join(o.Dir, "outpostd.log"))
	if err != nil {
		return res, err
	}
	defer logf.Close()
	od := exec.CommandContext(ctx, o.Outpostd, "-config", cfgPath, "-data", data, "-fleet", filepath.Join(o.Dir, "no-fleet.json"))
	od.Stdout, od.Stderr = logf, logf
	od.Env = append(os.Environ(), o.Env...)
	if err := od.Start(); err != nil {
		return res, err
	}
	rec := proc{od}
	defer rec.stop()

	floorOut := filepath.Join(o.Dir, "floor")
	os.MkdirAll(floorOut, 0o755)
	fl := exec.CommandContext(ctx, o.Self)
	fl.Env = append(os.Environ(), floorEnv+"="+strings.Join(urls, ","), floorDir+"="+floorOut)
	flOut, _ := fl.StdoutPipe()
	fl.Stderr = logf
	if err := fl.Start(); err != nil {
		return res, err
	}
	floor := proc{fl}
	defer floor.stop()
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(flOut)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()

	// Both up: every camera online in outpostd, the floor reading all.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 5 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for floorReady := false; ; time.Sleep(200 * time.Millisecond) {
		select {
		case l := <-lines:
			floorReady = floorReady || l == floorLine
		default:
		}
		var s struct{ Cameras []struct{ ID, State string } }
		online := 0
		if r, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/api/v1/status", port)); err == nil {
			json.NewDecoder(r.Body).Decode(&s)
			r.Body.Close()
			for _, c := range s.Cameras {
				if c.State == "online" {
					online++
				}
			}
		}
		if floorReady && online == o.N {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("after 60 s: outpostd has %d of %d cameras online, floor ready %v (logs: %s)", online, o.N, floorReady, logf.Name())
		}
	}

	// The measured window.
	c0, err1 := rec.cpu()
	f0, err2 := floor.cpu()
	t0 := time.Now()
	if err1 != nil || err2 != nil {
		return res, fmt.Errorf("reading /proc: %v %v", err1, err2)
	}
	o.Log("N=%d: recording for %v", o.N, o.D)
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(o.D):
	}
	c1, _ := rec.cpu()
	f1, _ := floor.cpu()
	res.Window = time.Since(t0)
	res.CPU, res.FloorCPU = c1-c0, f1-f0

	// Stop the cameras, let the last frames arrive, then stop both
	// readers (outpostd closes its open segments).
	sent := make([]int64, o.N)
	for i, c := range cams {
		c.Stop()
		sent[i] = c.Sent()
		if err := c.Err(); err != nil {
			return res, fmt.Errorf("camera %d: %w", i, err)
		}
	}
	time.Sleep(2 * time.Second)
	res.HWM, _ = rec.hwm()
	res.FloorHWM, _ = floor.hwm()
	res.ServerDrops = srv.WriteErrors()
	rec.stop()
	floor.cmd.Process.Signal(syscall.SIGTERM)
	for l := range lines {
		var p int64
		fmt.Sscanf(l, "packets %d frames %d", &p, &res.FloorFrames)
	}
	floor.stop()

	// What was recorded: the sequence numbers in the segments. A camera's
	// recording starts at its first key frame after connecting; from
	// there, every frame sent must be in a segment.
	for i := range o.N {
		seqs, segs, err := recordedSeqs(filepath.Join(data, "recordings", fmt.Sprintf("cam%02d", i)))
		if err != nil {
			return res, err
		}
		res.Segments += segs
		if len(seqs) == 0 {
			res.Lost += sent[i]
			res.Sent += sent[i]
			continue
		}
		first := sent[i]
		for s := range seqs {
			first = min(first, s)
		}
		n := sent[i] - first
		res.Sent += n
		var got int64
		for s := range seqs {
			if s >= first && s < sent[i] {
				got++
			}
		}
		res.Recorded += got
		res.Lost += n - got
	}
	if b, err := os.ReadFile(logf.Name()); err == nil {
		res.Reconnects = strings.Count(string(b), "camera session ended")
	}
	return res, nil
}

// recordedSeqs reads every segment of a camera and returns the frame
// sequence numbers found in them.
func recordedSeqs(dir string) (map[int64]bool, int, error) {
	seqs := map[int64]bool{}
	segs := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".mp4") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var parts fmp4.Parts
		if err := parts.Unmarshal(b); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		segs++
		for _, pt := range parts {
			for _, tr := range pt.Tracks {
				for _, s := range tr.Samples {
					if seq, ok := seqOf(s.Payload); ok {
						seqs[seq] = true
					}
				}
			}
		}
		return nil
	})
	return seqs, segs, err
}
