package ingest

import (
	"sync"
	"time"
)

// State is a camera's connection state.
type State string

// The states a camera goes through.
const (
	// Connecting: dialing, DESCRIBE/SETUP/PLAY, or waiting for the first
	// key frame of the session.
	Connecting State = "connecting"
	// Online: the sink has been started and samples flow.
	Online State = "online"
	// Offline: the last session ended; waiting out the backoff.
	Offline State = "offline"
)

// Stats is a camera's health for telemetry. Rates cover the last 5 s.
type Stats struct {
	State State
	Since time.Time // when State was entered
	// FPS counts video samples handed to the sink per second.
	FPS float64
	// Bitrate is the RTP payload received, in bit/s, all tracks.
	Bitrate float64
	// LastKeyFrame is when the last video key frame was handed on.
	LastKeyFrame time.Time
	// Reconnects counts sessions started after the first one.
	Reconnects uint64
	// Frames counts video samples handed to the sink.
	Frames uint64
	// Dropped counts packets and access units thrown away as bad:
	// malformed or undecodable, wild timestamps, out of order, or refused
	// by the sink. Waiting for the first key frame does not count.
	Dropped uint64
	// Lost counts RTP packets missing from the sequence (UDP mostly).
	Lost uint64
	// LastError is the error that ended the last session, or the last
	// drop reason logged, with credentials redacted.
	LastError string
}

const (
	slotDur = 250 * time.Millisecond
	nSlots  = 20 // 5 s
)

// health is the mutable side of Stats, shared between the session's
// callbacks and Stats readers.
type health struct {
	mu sync.Mutex
	s  Stats
	// first packet and first frame ever: early rates average over less
	firstByte, firstFrame time.Time
	slots                 [nSlots]struct {
		n             int64
		frames, bytes uint64
	}
}

func (h *health) slot(now time.Time) int64 { return now.UnixNano() / int64(slotDur) }

func (h *health) add(now time.Time, frames, bytes int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.firstByte.IsZero() {
		h.firstByte = now
	}
	if h.firstFrame.IsZero() && frames > 0 {
		h.firstFrame = now
	}
	n := h.slot(now)
	s := &h.slots[n%nSlots]
	if s.n != n {
		s.n, s.frames, s.bytes = n, 0, 0
	}
	s.frames += uint64(frames)
	s.bytes += uint64(bytes)
	h.s.Frames += uint64(frames)
}

func (h *health) update(f func(s *Stats)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f(&h.s)
}

func (h *health) setState(st State, now time.Time) {
	h.update(func(s *Stats) {
		if s.State != st {
			s.State, s.Since = st, now
		}
	})
}

func (h *health) snapshot(now time.Time) Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.s
	n := h.slot(now)
	var frames, bytes uint64
	for _, sl := range h.slots {
		if sl.n > n-nSlots && sl.n <= n {
			frames += sl.frames
			bytes += sl.bytes
		}
	}
	window := now.Sub(time.Unix(0, (n-nSlots+1)*int64(slotDur)))
	rate := func(v uint64, since time.Time) float64 {
		return float64(v) / max(min(window, now.Sub(since)), time.Second).Seconds()
	}
	s.FPS, s.Bitrate = rate(frames, h.firstFrame), rate(bytes*8, h.firstByte)
	return s
}
