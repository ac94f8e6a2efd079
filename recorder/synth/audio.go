package synth

import (
	"fmt"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/outpost-gw/outpost/recorder"
)

// AudioOptions configures a silent audio Source. Zero values take defaults.
type AudioOptions struct {
	Codec recorder.Codec // recorder.AAC, recorder.Opus or recorder.G711
	// SampleRate applies to AAC (default 48000); Opus is always 48000 Hz,
	// G711 8000 Hz.
	SampleRate      int
	Channels        int  // 1 or 2; default 1
	MULaw           bool // G711: µ-law (PCMU) rather than A-law (PCMA)
	FramesPerSample int  // frames per Sample.AU; default 1
	Track           int  // Sample.Track of the generated samples
	Start           time.Time
}

// Audio generates silent audio frames: AAC-LC frames with no spectral data
// (1024 samples each), Opus CELT silence frames (20 ms) or G711 silence
// (20 ms). It is not safe for concurrent use.
type Audio struct {
	o         AudioOptions
	track     recorder.Track
	frame     []byte
	frameLen  int // samples per frame
	n         int // frames generated
	clockRate int
}

// NewAudio returns an Audio source for o.
func NewAudio(o AudioOptions) (*Audio, error) {
	if o.Channels == 0 {
		o.Channels = 1
	}
	if o.FramesPerSample == 0 {
		o.FramesPerSample = 1
	}
	if o.Channels < 1 || o.Channels > 2 || o.FramesPerSample < 1 || o.FramesPerSample > 64 {
		return nil, fmt.Errorf("%w: %d channels, %d frames per sample", ErrOptions, o.Channels, o.FramesPerSample)
	}
	if o.Start.IsZero() {
		o.Start = time.Now()
	}
	a := &Audio{o: o}
	switch o.Codec {
	case recorder.AAC:
		if o.SampleRate == 0 {
			o.SampleRate = 48000
		}
		conf, err := mpeg4audio.AudioSpecificConfig{
			Type: mpeg4audio.ObjectTypeAACLC, SampleRate: o.SampleRate, ChannelCount: o.Channels,
		}.Marshal()
		if err != nil {
			return nil, fmt.Errorf("%w: AAC at %d Hz: %w", ErrOptions, o.SampleRate, err)
		}
		a.clockRate, a.frameLen, a.frame = o.SampleRate, mpeg4audio.SamplesPerAccessUnit, silentAAC(o.Channels)
		a.track = recorder.Track{Codec: recorder.AAC, ClockRate: o.SampleRate, AACConfig: conf, Channels: o.Channels}
	case recorder.Opus:
		toc := byte(0xF8) // config 31: CELT fullband 20 ms, mono, one frame
		if o.Channels == 2 {
			toc |= 0x04
		}
		a.clockRate, a.frameLen, a.frame = 48000, 960, []byte{toc, 0xFF, 0xFE}
		a.track = recorder.Track{Codec: recorder.Opus, ClockRate: 48000, Channels: o.Channels}
	case recorder.G711:
		a.clockRate, a.frameLen = 8000, 160
		a.frame = make([]byte, 160*o.Channels)
		silence := byte(0xD5)
		if o.MULaw {
			silence = 0xFF
		}
		for i := range a.frame {
			a.frame[i] = silence
		}
		a.track = recorder.Track{Codec: recorder.G711, ClockRate: 8000, Channels: o.Channels, MULaw: o.MULaw}
	default:
		return nil, fmt.Errorf("%w: audio codec %q", ErrOptions, o.Codec)
	}
	a.o = o
	return a, nil
}

// Track describes the stream (for AAC with its AudioSpecificConfig).
func (a *Audio) Track() recorder.Track { return a.track }

// Next returns the next sample of FramesPerSample frames; DTS=PTS is the
// first frame's time, Key is always true.
func (a *Audio) Next() recorder.Sample {
	dts := time.Duration(int64(a.n) * int64(a.frameLen) * int64(time.Second) / int64(a.clockRate))
	s := recorder.Sample{Track: a.o.Track, DTS: dts, PTS: dts, Key: true, Received: a.o.Start.Add(dts)}
	for range a.o.FramesPerSample {
		s.AU = append(s.AU, a.frame)
	}
	a.n += a.o.FramesPerSample
	return s
}

// silentAAC returns an AAC-LC raw_data_block with one single channel
// element (mono) or one channel pair element (stereo) whose channels have
// max_sfb=0, so no spectral data: silence. ISO 14496-3, 4.4.2.
func silentAAC(channels int) []byte {
	var w bitWriter
	ics := func() {
		w.u(8, 100) // global_gain
		w.u(1, 0)   // ics_reserved_bit
		w.u(2, 0)   // window_sequence: ONLY_LONG_SEQUENCE
		w.u(1, 0)   // window_shape
		w.u(6, 0)   // max_sfb: no scale factor bands
		w.u(1, 0)   // predictor_data_present
		w.u(3, 0)   // pulse, tns, gain control data absent
	}
	if channels == 2 {
		w.u(3, 1) // ID_CPE
		w.u(4, 0)
		w.u(1, 0) // common_window
		ics()
		ics()
	} else {
		w.u(3, 0) // ID_SCE
		w.u(4, 0)
		ics()
	}
	w.u(3, 7) // ID_END
	w.align()
	return w.buf
}
