package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"

	"github.com/outpost-gw/outpost/recorder/synth"
)

// stream is one synthetic GOP shared by all cameras: pure-Go H264 (I_PCM
// IDR, skip P frames) brought up to the bit rate with SEI padding that
// also carries each frame's sequence number.
type stream struct {
	sps, pps []byte
	frames   [][][]byte // one GOP, decode order, VCL NAL units only
	fps      int
	pad      []int // SEI padding per frame of the GOP
}

func newStream(width, height, fps, gop int, bitrate int64) (*stream, error) {
	src, err := synth.New(synth.Options{Width: width, Height: height, FPS: fps, GOP: gop})
	if err != nil {
		return nil, err
	}
	tr := src.Track()
	st := &stream{sps: tr.SPS, pps: tr.PPS, fps: fps}
	var size int
	for range gop {
		s := src.Next()
		var vcl [][]byte
		for _, n := range s.AU {
			if t := n[0] & 0x1F; t >= 1 && t <= 5 {
				vcl = append(vcl, n)
				size += len(n)
			}
		}
		st.frames = append(st.frames, vcl)
	}
	budget := int(bitrate / 8 * int64(gop) / int64(fps)) // bytes per GOP
	if budget < size {
		return nil, fmt.Errorf("a %dx%d GOP is %d bytes, more than %d bytes at %d bit/s: pick a smaller size", width, height, size, budget, bitrate)
	}
	for i := range st.frames {
		pad := 0
		if i > 0 { // the IDR is big already; P frames carry the rest
			pad = (budget - size) / (gop - 1)
		}
		st.pad = append(st.pad, pad)
	}
	return st, nil
}

var seiUUID = []byte("outpost-bench-sq") // 16 bytes: user_data_unregistered

// sei is an SEI NAL unit (user data unregistered) carrying seq and pad
// bytes of padding; no byte pattern in it needs emulation prevention.
func sei(seq int64, pad int) []byte {
	size := len(seiUUID) + 5 + pad
	n := make([]byte, 0, size+size/255+4)
	n = append(n, 0x06, 5) // SEI; payloadType 5
	for s := size; ; s -= 255 {
		if s < 255 {
			n = append(n, byte(s))
			break
		}
		n = append(n, 0xFF)
	}
	n = append(n, seiUUID...)
	for i := 4; i >= 0; i-- {
		n = append(n, 0x80|byte(seq>>(7*i))&0x7F)
	}
	for range pad {
		n = append(n, 0xAA)
	}
	return append(n, 0x80) // rbsp_trailing_bits
}

// seqOf finds the sequence number in an AVCC-framed access unit.
func seqOf(avcc []byte) (int64, bool) {
	for len(avcc) >= 4 {
		l := int(avcc[0])<<24 | int(avcc[1])<<16 | int(avcc[2])<<8 | int(avcc[3])
		avcc = avcc[4:]
		if l > len(avcc) {
			return 0, false
		}
		n := avcc[:l]
		avcc = avcc[l:]
		if len(n) < 3 || n[0]&0x1F != 6 || n[1] != 5 {
			continue
		}
		i := 2
		for i < len(n) && n[i] == 0xFF {
			i++
		}
		i++
		if i+len(seiUUID)+5 > len(n) || string(n[i:i+len(seiUUID)]) != string(seiUUID) {
			continue
		}
		var seq int64
		for _, b := range n[i+len(seiUUID) : i+len(seiUUID)+5] {
			seq = seq<<7 | int64(b&0x7F)
		}
		return seq, true
	}
	return 0, false
}

// camera publishes the stream to one path of the RTSP server in real
// time, numbering its frames from 0.
type camera struct {
	c     *gortsplib.Client
	media *description.Media
	enc   *rtph264.Encoder
	st    *stream
	next  atomic.Int64 // frames sent
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	err   atomic.Pointer[error]
}

func startCamera(url string, st *stream) (*camera, error) {
	u, err := base.ParseURL(url)
	if err != nil {
		return nil, err
	}
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		return nil, err
	}
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{Scheme: u.Scheme, Host: u.Host, Transport: &tcp, WriteQueueSize: 4096,
		OnDecodeError: func(error) {}, OnPacketsLost: func(uint64) {}}
	desc := &description.Session{Medias: []*description.Media{{
		Type: description.MediaTypeVideo, Control: "trackID=0",
		Formats: []format.Format{&format.H264{PayloadTyp: 96, SPS: st.sps, PPS: st.pps, PacketizationMode: 1}},
	}}}
	if err := c.StartRecording(url, desc); err != nil {
		return nil, fmt.Errorf("publish %s: %w", url, err)
	}
	cam := &camera{c: c, media: desc.Medias[0], enc: enc, st: st, stop: make(chan struct{}), done: make(chan struct{})}
	go cam.run()
	return cam, nil
}

func (cam *camera) run() {
	defer close(cam.done)
	every := time.Second / time.Duration(cam.st.fps)
	start := time.Now()
	for seq := int64(0); ; seq++ {
		k := int(seq % int64(len(cam.st.frames)))
		au := [][]byte{sei(seq, cam.st.pad[k])}
		if k == 0 {
			au = [][]byte{cam.st.sps, cam.st.pps, au[0]}
		}
		au = append(au, cam.st.frames[k]...)
		pkts, err := cam.enc.Encode(au)
		ts := uint32(90000*7 + seq*90000/int64(cam.st.fps))
		for _, p := range pkts {
			if err == nil {
				p.Timestamp = ts
				err = cam.c.WritePacketRTP(cam.media, p)
			}
		}
		if err != nil {
			cam.err.Store(&err)
			return
		}
		cam.next.Store(seq + 1)
		// Paced on the start time, not a ticker: a late frame does not
		// slow the stream down, the next ones catch up.
		select {
		case <-cam.stop:
			return
		case <-time.After(time.Until(start.Add(time.Duration(seq+1) * every))):
		}
	}
}

// Sent is the number of frames sent (sequence numbers 0..Sent-1).
func (cam *camera) Sent() int64 { return cam.next.Load() }

func (cam *camera) Err() error {
	if p := cam.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Stop stops sending (the connection stays up until Close).
func (cam *camera) Stop() {
	cam.once.Do(func() { close(cam.stop) })
	<-cam.done
}

func (cam *camera) Close() {
	cam.Stop()
	cam.c.Close()
}
