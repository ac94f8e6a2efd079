package rtsptest

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/pion/rtp"
)

// H264Stream is an H264 elementary stream to publish in a loop.
type H264Stream struct {
	// SPS and PPS go into the SDP (sprop-parameter-sets), without start
	// codes.
	SPS, PPS []byte
	// Frames are access units in decode order, NAL units without start
	// codes, PTS = DTS; Frames[0] must be an IDR frame. After the last
	// one the stream starts over at Frames[0].
	Frames [][][]byte
	// FPS paces the frames; default 25.
	FPS int
	// InBand also sends SPS and PPS in front of every IDR frame; without
	// it they travel only in the SDP, as with many cameras.
	InBand bool
}

func (st H264Stream) format() *format.H264 {
	return &format.H264{PayloadTyp: 96, SPS: st.SPS, PPS: st.PPS, PacketizationMode: 1}
}

func (st H264Stream) desc() *description.Session {
	return &description.Session{Medias: []*description.Media{{
		Type:    description.MediaTypeVideo,
		Control: "trackID=0",
		Formats: []format.Format{st.format()},
	}}}
}

func (st H264Stream) fps() int {
	if st.FPS <= 0 {
		return 25
	}
	return st.FPS
}

// packetizer turns an H264Stream into timestamped RTP packets, frame by
// frame.
type packetizer struct {
	st   H264Stream
	enc  *rtph264.Encoder
	base uint32
	n    int
}

func newPacketizer(st H264Stream, maxPayload int) (*packetizer, error) {
	if len(st.Frames) == 0 {
		return nil, errors.New("rtsptest: H264Stream has no frames")
	}
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1, PayloadMaxSize: maxPayload}
	if err := enc.Init(); err != nil {
		return nil, fmt.Errorf("rtsptest: h264 encoder: %w", err)
	}
	return &packetizer{st: st, enc: enc, base: 90000 * 7}, nil
}

// next returns the packets of the next frame and that frame's RTP
// timestamp.
func (p *packetizer) next() ([]*rtp.Packet, uint32, error) {
	au := p.st.Frames[p.n%len(p.st.Frames)]
	if p.st.InBand && len(au) > 0 && len(au[0]) > 0 && au[0][0]&0x1f == 5 {
		au = append([][]byte{p.st.SPS, p.st.PPS}, au...)
	}
	ts := p.base + uint32(int64(p.n)*90000/int64(p.st.fps()))
	p.n++
	pkts, err := p.enc.Encode(au)
	if err != nil {
		return nil, 0, fmt.Errorf("rtsptest: packetize frame %d: %w", p.n-1, err)
	}
	for _, pkt := range pkts {
		pkt.Timestamp = ts
	}
	return pkts, ts, nil
}

// Publisher publishes an H264Stream to an RTSP server in real time, from
// this process (no ffmpeg needed).
type Publisher struct {
	c    *gortsplib.Client
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	sent int
	err  error
}

// Publish ANNOUNCEs the stream at url (over TCP) and sends its frames at
// st.FPS until Close or until the server drops the connection.
func Publish(url string, st H264Stream) (*Publisher, error) {
	pz, err := newPacketizer(st, 0)
	if err != nil {
		return nil, err
	}
	u, err := base.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("rtsptest: publish: %w", err)
	}
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{
		Scheme: u.Scheme, Host: u.Host, Transport: &tcp, WriteQueueSize: 2048,
		OnDecodeError: func(error) {}, OnPacketsLost: func(uint64) {},
	}
	desc := st.desc()
	if err := c.StartRecording(url, desc); err != nil {
		return nil, fmt.Errorf("rtsptest: publish %s: %w", url, err)
	}
	p := &Publisher{c: c, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run(pz, desc.Medias[0], time.Second/time.Duration(st.fps()))
	return p, nil
}

func (p *Publisher) run(pz *packetizer, m *description.Media, every time.Duration) {
	defer close(p.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		pkts, _, err := pz.next()
		for _, pkt := range pkts {
			if err == nil {
				err = p.c.WritePacketRTP(m, pkt)
			}
		}
		p.mu.Lock()
		p.sent++
		p.err = err
		p.mu.Unlock()
		if err != nil {
			return
		}
		select {
		case <-t.C:
		case <-p.stop:
			return
		}
	}
}

// Sent is the number of frames sent so far.
func (p *Publisher) Sent() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}

// Err is the error that stopped the publisher, if any.
func (p *Publisher) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Close stops publishing and disconnects.
func (p *Publisher) Close() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.c.Close()
}
