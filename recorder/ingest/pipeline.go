package ingest

import (
	"errors"
	"fmt"
	"time"

	"github.com/outpost-gw/outpost/recorder"
	"github.com/pion/rtp"
)

// maxJump is how much further than the wall clock a track's RTP timestamp
// may move between two packets (Opus DTX pauses advance both alike).
const maxJump = 5 * time.Second

// gate keeps packets with wild RTP timestamps away from PacketPTS2: its
// int32 unwrapping drifts by 2^32 ticks (13 h at 90 kHz) after a few
// random timestamps in a row, and every later PTS would be off. A camera
// whose timeline really jumps stops delivering, stalls, and gets a fresh
// session (a visible gap), which is what such a jump deserves.
type gate struct {
	seen bool
	ts   uint32
	at   time.Time
}

func (g *gate) admit(ts uint32, now time.Time, clockRate int) bool {
	if g.seen {
		limit := int64((now.Sub(g.at) + maxJump).Seconds() * float64(clockRate))
		if d := int64(int32(ts - g.ts)); d > limit || -d > limit {
			return false
		}
	}
	*g = gate{true, ts, now}
	return true
}

// pipeline turns the RTP packets of one RTSP session into samples for the
// sink. It is not safe for concurrent use: the session serializes calls.
//
// The sink is started at the first video key frame (at the first audio
// frame when there is no video), so the first sample is always a key frame
// with its parameter sets, even when the SDP lacks them. When in-band
// parameter sets change, the next key frame ends the sink session with
// ErrParamsChanged and starts a new one with the new Tracks; timestamps
// carry on (they are not reset). A sink Write error likewise ends the sink
// session; it restarts at the next key frame.
type pipeline struct {
	sink   recorder.Sink
	h      *health
	tracks []recorder.Track
	deps   []depacketizer
	video  int // index into tracks, -1 without video
	onDrop func(now time.Time, what string, err error)
	onUp   func(now time.Time)

	started   bool
	offset    time.Duration // keeps DTS ≥ 0 (H265 with reordering starts below 0)
	offsetSet bool
	last      []time.Duration // DTS of the last sample per track
	have      []bool
	gates     []gate
	lastOut   time.Time // last sample handed on, or when waiting began
}

func newPipeline(sink recorder.Sink, h *health, tracks []recorder.Track, deps []depacketizer, now time.Time) *pipeline {
	p := &pipeline{sink: sink, h: h, tracks: tracks, deps: deps, video: -1, lastOut: now,
		last: make([]time.Duration, len(tracks)), have: make([]bool, len(tracks)), gates: make([]gate, len(tracks)),
		onDrop: func(time.Time, string, error) {}, onUp: func(time.Time) {}}
	for i, t := range tracks {
		if t.Codec.IsVideo() {
			p.video = i
			break
		}
	}
	return p
}

// packet handles one RTP packet of track i; ptsOf is PacketPTS2, called
// for every packet that passes the timestamp gate.
func (p *pipeline) packet(i int, pkt *rtp.Packet, now time.Time, ptsOf func(*rtp.Packet) (int64, bool)) {
	p.h.add(now, 0, len(pkt.Payload))
	if !p.gates[i].admit(pkt.Timestamp, now, p.tracks[i].ClockRate) {
		p.drop(now, p.tracks[i].Codec, fmt.Errorf("RTP timestamp %d far from %d", pkt.Timestamp, p.gates[i].ts))
		return
	}
	pts, ok := ptsOf(pkt)
	if !ok { // no timing yet: the track has not sent a random access point
		p.drop(now, "no timestamp yet", errWaitKey)
		return
	}
	u, err := p.deps[i].push(pkt, pts)
	if err != nil {
		p.drop(now, p.tracks[i].Codec, err)
		return
	}
	if u != nil {
		p.unit(i, u, now)
	}
}

func (p *pipeline) unit(i int, u *unit, now time.Time) {
	tr := &p.tracks[i]
	if i == p.video && u.key {
		if vp := p.params(); vp != nil && vp.changed {
			tr.VPS, tr.SPS, tr.PPS = vp.vps, vp.sps, vp.pps
			vp.changed = false
			if p.started {
				p.started = false
				p.sink.End(ErrParamsChanged)
			}
		}
	}
	if !p.started {
		if p.video >= 0 && (i != p.video || !u.key) {
			p.drop(now, "before key frame", errWaitKey)
			return
		}
		if err := p.sink.Start(append([]recorder.Track(nil), p.tracks...)); err != nil {
			p.drop(now, "sink start", fmt.Errorf("%w: %w", ErrSink, err))
			return
		}
		p.started = true
		p.onUp(now)
	}
	dts, pts := ticks(u.dts, tr.ClockRate), ticks(u.pts, tr.ClockRate)
	if !p.offsetSet {
		p.offset, p.offsetSet = max(0, -dts), true
	}
	dts, pts = dts+p.offset, max(pts+p.offset, dts+p.offset)
	if p.have[i] {
		// Drop rather than resync: a bogus unit must not cost the good
		// frames around it.
		if dts <= p.last[i] {
			p.drop(now, tr.Codec, fmt.Errorf("DTS %v not after %v", dts, p.last[i]))
			return
		}
	}
	err := p.sink.Write(recorder.Sample{Track: i, DTS: dts, PTS: pts, Key: u.key, AU: u.au, Received: now})
	if err != nil {
		p.started = false
		err = fmt.Errorf("%w: %w", ErrSink, err)
		p.sink.End(err)
		p.drop(now, "sink write", err)
		return
	}
	p.last[i], p.have[i], p.lastOut = dts, true, now
	if i == p.video {
		p.h.add(now, 1, 0)
		if u.key {
			p.h.update(func(s *Stats) { s.LastKeyFrame = now })
		}
	}
}

func (p *pipeline) params() *videoParams {
	switch d := p.deps[p.video].(type) {
	case *h264Depack:
		return &d.params
	case *h265Depack:
		return &d.params
	}
	return nil
}

// drop counts and reports a discarded packet or unit; waiting for a key
// frame is normal after every (re)connection and neither.
func (p *pipeline) drop(now time.Time, what any, err error) {
	if !errors.Is(err, errWaitKey) {
		p.h.update(func(s *Stats) { s.Dropped++ })
		p.onDrop(now, fmt.Sprint(what), err)
	}
}

// check reports a stalled session: no sample for timeout while started,
// or no key frame for 2×timeout while waiting for one.
func (p *pipeline) check(now time.Time, timeout time.Duration) error {
	switch idle := now.Sub(p.lastOut); {
	case p.started && idle > timeout:
		return fmt.Errorf("%w: no samples for %v", ErrStalled, idle.Round(time.Millisecond))
	case !p.started && idle > 2*timeout:
		return fmt.Errorf("%w: no key frame for %v", ErrStalled, idle.Round(time.Millisecond))
	}
	return nil
}

// end closes the sink session, if one is open.
func (p *pipeline) end(err error) {
	if p.started {
		p.started = false
		p.sink.End(err)
	}
}

// ticks converts a timestamp in clock-rate ticks to a Duration without
// overflowing for long sessions.
func ticks(v int64, clockRate int) time.Duration {
	cr := int64(clockRate)
	return time.Duration(v/cr*int64(time.Second) + v%cr*int64(time.Second)/cr)
}
