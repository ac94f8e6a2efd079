// Package recorder records the site's RTSP cameras to crash-safe fMP4
// segments on local storage, indexes them, and serves playback and live
// restreams. The flow reads one way: ingest (one RTSP client per camera)
// → segment (fMP4 files, parts fsync'd every second) → index → playback.
//
// This file holds the types the stages share.
package recorder

import "time"

// Codec names a track's codec.
type Codec string

// The codecs a camera may send that the recorder keeps.
const (
	H264 Codec = "H264"
	H265 Codec = "H265"
	AAC  Codec = "AAC" // MPEG-4 audio
	Opus Codec = "Opus"
	G711 Codec = "G711" // PCMU or PCMA
)

// IsVideo reports whether the codec is a video codec.
func (c Codec) IsVideo() bool { return c == H264 || c == H265 }

// Track describes one elementary stream of a camera.
type Track struct {
	Codec     Codec
	ClockRate int // RTP clock rate: 90000 for video, the sample rate for audio
	// Video parameter sets, without start codes (H265 also has VPS).
	VPS, SPS, PPS []byte
	// AAC: the AudioSpecificConfig.
	AACConfig []byte
	// Audio channel count (Opus, G711, AAC).
	Channels int
	// G711: true for µ-law (PCMU), false for A-law (PCMA).
	MULaw bool
}

// Sample is one access unit of a track, as the ingest hands it on.
type Sample struct {
	Track int // index into the camera's []Track
	// DTS and PTS are relative to the start of the session, in the track's
	// time base converted to a Duration; DTS is monotonic per track.
	DTS, PTS time.Duration
	// Key is true for a video random access point (IDR/IRAP, with its
	// parameter sets in AU) and for every audio frame.
	Key bool
	// AU is the access unit: video NAL units without start codes; audio:
	// one element per frame.
	AU [][]byte
	// Received is the local wall clock when the sample arrived: recordings
	// are stamped with it, not with the camera's RTCP (see field notes).
	Received time.Time
}

// Sink receives a camera's stream. Start is called at every (re)connection
// with the tracks of the session; Write gets samples in arrival order; End
// marks a session's end (disconnect, stall), so the sink can close a
// segment and leave a visible gap.
type Sink interface {
	Start(tracks []Track) error
	Write(s Sample) error
	End(reason error)
}

// SameTracks reports whether two sessions of a camera carry the same
// tracks (codecs, clock rates, parameter sets): a sink may then carry on
// across the reconnection instead of starting over.
func SameTracks(a, b []Track) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Codec != y.Codec || x.ClockRate != y.ClockRate || string(x.VPS) != string(y.VPS) || string(x.SPS) != string(y.SPS) ||
			string(x.PPS) != string(y.PPS) || string(x.AACConfig) != string(y.AACConfig) || x.Channels != y.Channels || x.MULaw != y.MULaw {
			return false
		}
	}
	return true
}

// Ticks converts a duration to a clock of rate ticks a second (a track's
// ClockRate, an fMP4 time scale), rounding to the nearest tick, without
// overflowing for long durations.
func Ticks(d time.Duration, rate int) int64 {
	if d < 0 {
		return -Ticks(-d, rate)
	}
	r := int64(rate)
	return int64(d/time.Second)*r + (int64(d%time.Second)*r+int64(time.Second)/2)/int64(time.Second)
}
