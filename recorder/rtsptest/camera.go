package rtsptest

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/conn"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/pion/rtp"
)

// Fault is how a fake Camera misbehaves.
type Fault int32

// The faults a Camera can show. Each connection gets the fault the camera
// has at that moment; SetFault also changes streams already running.
const (
	// Healthy streams the H264Stream in real time.
	Healthy Fault = iota
	// BadSDP answers DESCRIBE with a body that is not SDP.
	BadSDP
	// Garbage mixes random RTP payloads, random timestamps and non-RTP
	// interleaved frames into the stream.
	Garbage
	// Oversized sends NAL units unfragmented in jumbo RTP packets (up to
	// 65 kB, which gortsplib itself never sends) plus jumbo garbage.
	Oversized
	// Stall goes silent StallAfter into each connection, for StallFor,
	// keeping the TCP connection open and answering requests.
	Stall
	// Flood sends frames as fast as the connection takes them, with
	// timestamps still advancing at the nominal rate.
	Flood
)

// CameraConfig configures a fake Camera.
type CameraConfig struct {
	Stream H264Stream
	Fault  Fault
	// StallAfter and StallFor shape the Stall fault; defaults 1 s and 1 min.
	StallAfter, StallFor time.Duration
	Log                  *slog.Logger
}

// Camera is a fake IP camera: an RTSP server written by hand over TCP
// (interleaved transport only, path ignored) so that it can send what a
// well-behaved server library refuses to send.
type Camera struct {
	cfg   CameraConfig
	log   *slog.Logger
	ln    net.Listener
	fault atomic.Int32
	conns atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	open  map[net.Conn]struct{}
}

// StartCamera listens on 127.0.0.1 with a kernel-chosen port.
func StartCamera(cfg CameraConfig) (*Camera, error) {
	if len(cfg.Stream.Frames) == 0 {
		return nil, fmt.Errorf("rtsptest: camera: stream has no frames")
	}
	if cfg.StallAfter == 0 {
		cfg.StallAfter = time.Second
	}
	if cfg.StallFor == 0 {
		cfg.StallFor = time.Minute
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("rtsptest: camera: %w", err)
	}
	c := &Camera{cfg: cfg, log: orDiscard(cfg.Log), ln: ln, open: map[net.Conn]struct{}{}}
	c.fault.Store(int32(cfg.Fault))
	c.wg.Add(1)
	go c.accept()
	return c, nil
}

// URL is the camera's stream URL.
func (c *Camera) URL() string { return "rtsp://" + c.ln.Addr().String() + "/stream1" }

// Connections counts the connections accepted so far.
func (c *Camera) Connections() int { return int(c.conns.Load()) }

// SetFault changes the camera's behaviour from now on.
func (c *Camera) SetFault(f Fault) { c.fault.Store(int32(f)) }

// Close disconnects all clients and stops listening.
func (c *Camera) Close() {
	c.ln.Close()
	c.mu.Lock()
	for nc := range c.open {
		nc.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *Camera) accept() {
	defer c.wg.Done()
	for {
		nc, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.open[nc] = struct{}{}
		c.mu.Unlock()
		n := c.conns.Add(1)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.serve(nc, uint64(n))
			c.mu.Lock()
			delete(c.open, nc)
			c.mu.Unlock()
		}()
	}
}

// camConn is one client connection; writes are serialized by mu.
type camConn struct {
	nc net.Conn
	mu sync.Mutex
	bw *bufio.Writer
}

func (cc *camConn) write(parts ...[]byte) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, p := range parts {
		cc.bw.Write(p) // errors stick and show at Flush
	}
	cc.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return cc.bw.Flush()
}

func (c *Camera) serve(nc net.Conn, id uint64) {
	ctx, cancel := context.WithCancel(context.Background())
	var streaming sync.WaitGroup
	defer func() { cancel(); nc.Close(); streaming.Wait() }()
	cc := &camConn{nc: nc, bw: bufio.NewWriterSize(nc, 64<<10)}
	rd := conn.NewConn(nc)
	playing := false
	for {
		what, err := rd.Read()
		if err != nil {
			return
		}
		req, ok := what.(*base.Request)
		if !ok {
			continue // RTCP receiver reports
		}
		res := &base.Response{StatusCode: base.StatusOK, Header: base.Header{"CSeq": req.Header["CSeq"]}}
		switch req.Method {
		case base.Options:
			res.Header["Public"] = base.HeaderValue{"OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN"}
		case base.Describe:
			res.Header["Content-Type"] = base.HeaderValue{"application/sdp"}
			res.Header["Content-Base"] = base.HeaderValue{c.URL() + "/"}
			if Fault(c.fault.Load()) == BadSDP {
				res.Body = []byte("v=0\r\nthis is not SDP\r\nm=video\x00\xff\r\n")
			} else {
				res.Body, err = c.cfg.Stream.desc().Marshal(false)
				if err != nil {
					res = &base.Response{StatusCode: base.StatusInternalServerError, Header: res.Header}
				}
			}
		case base.Setup:
			var th headers.Transport
			if th.Unmarshal(req.Header["Transport"]) != nil || th.Protocol != headers.TransportProtocolTCP {
				res.StatusCode = base.StatusUnsupportedTransport
				break
			}
			unicast := headers.TransportDeliveryUnicast
			res.Header["Transport"] = headers.Transport{
				Protocol: headers.TransportProtocolTCP, Delivery: &unicast, InterleavedIDs: &[2]int{0, 1},
			}.Marshal()
			res.Header["Session"] = base.HeaderValue{"4242;timeout=60"}
		case base.Play:
			res.Header["Session"] = base.HeaderValue{"4242"}
		case base.GetParameter, base.SetParameter:
		case base.Teardown:
			b, _ := res.Marshal()
			cc.write(b)
			return
		default:
			res.StatusCode = base.StatusNotImplemented
		}
		b, _ := res.Marshal()
		if cc.write(b) != nil {
			return
		}
		if req.Method == base.Play && !playing {
			playing = true
			streaming.Add(1)
			go func() {
				defer streaming.Done()
				defer nc.Close() // a failed write ends the connection
				if err := c.stream(ctx, cc, id); err != nil {
					c.log.Debug("rtsptest: camera stream ended", "err", err)
				}
			}()
		}
	}
}

// stream sends the camera's frames on interleaved channel 0 until ctx ends
// or a write fails, applying the current fault frame by frame.
func (c *Camera) stream(ctx context.Context, cc *camConn, id uint64) error {
	fault := Fault(c.fault.Load())
	maxPayload := 0
	if fault == Oversized {
		maxPayload = 65000
	}
	pz, err := newPacketizer(c.cfg.Stream, maxPayload)
	if err != nil {
		return err
	}
	rnd := rand.New(rand.NewPCG(id, 42))
	ssrc := rnd.Uint32()
	var seq uint16
	frame := func(pkt *rtp.Packet) []byte {
		pkt.SSRC = ssrc
		pkt.SequenceNumber = seq
		seq++
		b, _ := pkt.Marshal()
		return interleaved(0, b)
	}
	garbage := func(ts uint32, size int) []byte {
		p := make([]byte, size)
		for i := range p {
			p[i] = byte(rnd.UintN(256))
		}
		return frame(&rtp.Packet{Header: rtp.Header{
			Version: 2, PayloadType: 96, Timestamp: ts, Marker: rnd.IntN(2) == 0,
		}, Payload: p})
	}
	every := time.Second / time.Duration(c.cfg.Stream.fps())
	start := time.Now()
	next := start
	stalled := false
	for i := 0; ; i++ {
		fault = Fault(c.fault.Load())
		if fault == Stall && !stalled && time.Since(start) >= c.cfg.StallAfter {
			stalled = true
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(c.cfg.StallFor):
			}
			next = time.Now()
		}
		pkts, ts, err := pz.next()
		if err != nil {
			return err
		}
		var out [][]byte
		for _, pkt := range pkts {
			out = append(out, frame(pkt))
		}
		switch fault {
		case Garbage:
			for range 1 + rnd.IntN(3) {
				gts := ts
				if rnd.IntN(4) == 0 {
					gts = rnd.Uint32()
				}
				out = append(out, garbage(gts, 1+rnd.IntN(1400)))
			}
			if i%10 == 0 { // not RTP at all, and a bogus RTCP packet
				out = append(out, interleaved(0, []byte{0x13, 0x37, 0xde, 0xad}), interleaved(1, []byte{0xff, 0xff}))
			}
		case Oversized:
			if i%5 == 2 {
				out = append(out, garbage(ts, 65000))
			}
		}
		if err := cc.write(out...); err != nil {
			return err
		}
		if fault == Flood {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		next = next.Add(every)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(next)):
		}
	}
}

func interleaved(ch byte, payload []byte) []byte {
	b := make([]byte, 4, 4+len(payload))
	b[0], b[1] = base.InterleavedFrameMagicByte, ch
	binary.BigEndian.PutUint16(b[2:], uint16(len(payload)))
	return append(b, payload...)
}
