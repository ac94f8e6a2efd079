package main

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
)

// The floor is this program run again as a child with floorEnv set: bare
// gortsplib clients (TCP), one per camera, that append every RTP payload
// to a file per camera through a 64 KiB buffer — the least a recorder
// can do. It prints "ready" once every camera has delivered a packet, and
// the packet and frame counts when SIGTERM stops it.
const (
	floorEnv  = "OUTPOST_BENCH_FLOOR_URLS" // comma-separated rtsp:// URLs
	floorDir  = "OUTPOST_BENCH_FLOOR_DIR"
	floorLine = "ready"
)

type floorCam struct {
	mu             sync.Mutex
	f              *os.File
	w              *bufio.Writer
	packets, marks int64
	got            chan struct{}
	once           sync.Once
}

func floorMain() int {
	urls := strings.Split(os.Getenv(floorEnv), ",")
	dir := os.Getenv(floorDir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	cams := make([]*floorCam, len(urls))
	for i, u := range urls {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("cam%02d.rtp", i)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cams[i] = &floorCam{f: f, w: bufio.NewWriterSize(f, 64<<10), got: make(chan struct{})}
		go cams[i].run(u)
	}
	go func() {
		for _, c := range cams {
			<-c.got
		}
		fmt.Println(floorLine)
	}()
	<-sig
	var packets, frames int64
	for _, c := range cams {
		c.mu.Lock()
		c.w.Flush()
		c.f.Close()
		packets, frames = packets+c.packets, frames+c.marks
		c.mu.Unlock()
	}
	fmt.Printf("packets %d frames %d\n", packets, frames)
	return 0
}

func (c *floorCam) run(url string) {
	for {
		err := c.session(url)
		fmt.Fprintln(os.Stderr, "floor:", url, err)
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *floorCam) session(url string) error {
	u, err := base.ParseURL(url)
	if err != nil {
		return err
	}
	tcp := gortsplib.TransportTCP
	cl := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &tcp}
	if err := cl.Start2(); err != nil {
		return err
	}
	defer cl.Close()
	desc, _, err := cl.Describe(u)
	if err != nil {
		return err
	}
	if err := cl.SetupAll(desc.BaseURL, desc.Medias); err != nil {
		return err
	}
	cl.OnPacketRTPAny(func(_ *description.Media, _ format.Format, pkt *rtp.Packet) {
		c.mu.Lock()
		c.w.Write(pkt.Payload)
		c.packets++
		if pkt.Marker {
			c.marks++
		}
		c.mu.Unlock()
		c.once.Do(func() { close(c.got) })
	})
	if _, err := cl.Play(nil); err != nil {
		return err
	}
	return cl.Wait()
}
