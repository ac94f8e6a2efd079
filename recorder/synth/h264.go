// Package synth generates valid test streams in pure Go, without an encoder:
// H264 video whose IDR frames are made of raw I_PCM macroblocks and whose P
// frames skip every macroblock except a moving square (two I_PCM blocks),
// and silent AAC, Opus and G711 audio. The output decodes with
// `ffmpeg -xerror`; it feeds the recorder's stages in tests and demos.
//
// I_PCM is uncompressed: an IDR frame is about width*height*1.5 bytes, so
// keep pictures small (320×240 is 115 KB per IDR).
package synth

import (
	"errors"
	"fmt"
	"time"

	"github.com/outpost-gw/outpost/recorder"
)

// ErrOptions reports options the generators cannot honour.
var ErrOptions = errors.New("synth: invalid options")

// Options configures a synthetic H264 Source. Zero values take defaults.
type Options struct {
	Width, Height int // even, 16..4096; default 320×240
	FPS           int // frames per second; default 25
	GOP           int // frames from one IDR to the next; default 2*FPS
	// Reorder makes the stream B-frame-like: within a GOP, P frames are sent
	// in pairs swapped against display order (decode order I P2 P1 P4 P3…),
	// the SPS uses picture order counts and signals one reorder frame, and
	// PTS≠DTS. The decoder and the container timestamps agree on the order.
	Reorder bool
	Track   int       // Sample.Track of the generated samples
	Start   time.Time // Received of the first sample; default time.Now()
}

// Source generates H264 access units. It is not safe for concurrent use.
type Source struct {
	o          Options
	mbW, mbH   int
	sps, pps   []byte
	n          int // samples generated
	gop        int // index of the current GOP
	prevSquare int // macroblock address of the square in the previous frame
}

const (
	log2MaxFrameNum = 16
	log2MaxPOCLsb   = 16
)

// New returns a Source for o.
func New(o Options) (*Source, error) {
	if o.Width == 0 && o.Height == 0 {
		o.Width, o.Height = 320, 240
	}
	if o.FPS == 0 {
		o.FPS = 25
	}
	if o.GOP == 0 {
		o.GOP = 2 * o.FPS
	}
	if o.Width < 16 || o.Height < 16 || o.Width > 4096 || o.Height > 4096 || o.Width%2 != 0 || o.Height%2 != 0 {
		return nil, fmt.Errorf("%w: size %dx%d (even, 16..4096)", ErrOptions, o.Width, o.Height)
	}
	if o.FPS < 1 || o.FPS > 240 || o.GOP < 1 || o.GOP > 1<<14 {
		return nil, fmt.Errorf("%w: fps %d, gop %d", ErrOptions, o.FPS, o.GOP)
	}
	if o.Start.IsZero() {
		o.Start = time.Now()
	}
	s := &Source{o: o, mbW: (o.Width + 15) / 16, mbH: (o.Height + 15) / 16}
	s.sps = s.buildSPS()
	s.pps = buildPPS()
	return s, nil
}

// Track describes the stream, with its SPS and PPS.
func (s *Source) Track() recorder.Track {
	return recorder.Track{Codec: recorder.H264, ClockRate: 90000, SPS: s.sps, PPS: s.pps}
}

// FrameDuration is the time between two frames.
func (s *Source) FrameDuration() time.Duration { return time.Second / time.Duration(s.o.FPS) }

// Next returns the next access unit in decode order. DTS advances by one
// frame duration per sample; PTS equals DTS unless Options.Reorder is set.
// Key frames carry SPS, PPS and the IDR slice.
func (s *Source) Next() recorder.Sample {
	i := s.n
	s.n++
	k := i % s.o.GOP // position in the GOP, decode order
	s.gop = i / s.o.GOP
	disp := k
	if s.o.Reorder && k > 0 {
		switch {
		case k%2 == 1 && k+1 < s.o.GOP:
			disp = k + 1
		case k%2 == 0:
			disp = k - 1
		}
	}
	dts := time.Duration(i) * time.Second / time.Duration(s.o.FPS)
	pts := dts
	if s.o.Reorder {
		pts = time.Duration(i-k+disp+1) * time.Second / time.Duration(s.o.FPS)
	}
	smp := recorder.Sample{Track: s.o.Track, DTS: dts, PTS: pts, Received: s.o.Start.Add(dts)}
	if k == 0 {
		smp.Key = true
		smp.AU = [][]byte{s.sps, s.pps, s.idr()}
		s.prevSquare = -1
	} else {
		smp.AU = [][]byte{s.pFrame(k, disp)}
	}
	return smp
}

// level picks the lowest H.264 level whose MaxFS holds the picture.
func level(mbs int) uint64 {
	for _, l := range []struct{ maxFS, idc int }{{99, 10}, {396, 20}, {792, 21}, {1620, 30}, {3600, 31}, {5120, 32}, {8192, 40}, {22080, 50}, {36864, 51}} {
		if mbs <= l.maxFS {
			return uint64(l.idc)
		}
	}
	return 52
}

func (s *Source) buildSPS() []byte {
	var w bitWriter
	w.u(8, 66)   // profile_idc: Baseline
	w.u(8, 0xC0) // constraint_set0 and set1: Constrained Baseline
	w.u(8, level(s.mbW*s.mbH))
	w.ue(0)                   // seq_parameter_set_id
	w.ue(log2MaxFrameNum - 4) // log2_max_frame_num_minus4
	if s.o.Reorder {
		w.ue(0) // pic_order_cnt_type
		w.ue(log2MaxPOCLsb - 4)
	} else {
		w.ue(2) // POC follows decode order
	}
	w.ue(1) // max_num_ref_frames
	w.u(1, 0)
	w.ue(uint64(s.mbW - 1))
	w.ue(uint64(s.mbH - 1))
	w.u(1, 1) // frame_mbs_only_flag
	w.u(1, 1) // direct_8x8_inference_flag
	cropR, cropB := (s.mbW*16-s.o.Width)/2, (s.mbH*16-s.o.Height)/2
	if cropR > 0 || cropB > 0 {
		w.u(1, 1)
		w.ue(0)
		w.ue(uint64(cropR))
		w.ue(0)
		w.ue(uint64(cropB))
	} else {
		w.u(1, 0)
	}
	w.u(1, 1)                  // vui_parameters_present_flag
	w.u(4, 0)                  // aspect ratio, overscan, video signal, chroma loc: absent
	w.u(1, 1)                  // timing_info_present_flag
	w.u(32, 1)                 // num_units_in_tick
	w.u(32, uint64(2*s.o.FPS)) // time_scale
	w.u(1, 1)                  // fixed_frame_rate_flag
	w.u(3, 0)                  // nal hrd, vcl hrd, pic_struct_present
	w.u(1, 1)                  // bitstream_restriction_flag
	w.u(1, 1)                  // motion_vectors_over_pic_boundaries_flag
	w.ue(0)                    // max_bytes_per_pic_denom
	w.ue(0)                    // max_bits_per_mb_denom
	w.ue(16)
	w.ue(16)
	if s.o.Reorder {
		w.ue(1) // max_num_reorder_frames
		w.ue(2) // max_dec_frame_buffering
	} else {
		w.ue(0)
		w.ue(1)
	}
	w.trailing()
	return nalu(0x67, w.buf)
}

func buildPPS() []byte {
	var w bitWriter
	w.ue(0)   // pic_parameter_set_id
	w.ue(0)   // seq_parameter_set_id
	w.u(1, 0) // entropy_coding_mode_flag: CAVLC
	w.u(1, 0) // bottom_field_pic_order_in_frame_present_flag
	w.ue(0)   // num_slice_groups_minus1
	w.ue(0)   // num_ref_idx_l0_default_active_minus1
	w.ue(0)   // num_ref_idx_l1_default_active_minus1
	w.u(1, 0) // weighted_pred_flag
	w.u(2, 0) // weighted_bipred_idc
	w.se(0)   // pic_init_qp_minus26
	w.se(0)   // pic_init_qs_minus26
	w.se(0)   // chroma_qp_index_offset
	w.u(1, 1) // deblocking_filter_control_present_flag
	w.u(1, 0) // constrained_intra_pred_flag
	w.u(1, 0) // redundant_pic_cnt_present_flag
	w.trailing()
	return nalu(0x68, w.buf)
}

// sliceHeader writes a slice header of a single-slice frame. k is the frame
// position in the GOP in decode order (frame_num), disp in display order.
func (s *Source) sliceHeader(w *bitWriter, idr bool, k, disp int) {
	w.ue(0) // first_mb_in_slice
	if idr {
		w.ue(7) // I, all slices
	} else {
		w.ue(5) // P, all slices
	}
	w.ue(0) // pic_parameter_set_id
	w.u(log2MaxFrameNum, uint64(k))
	if idr {
		w.ue(uint64(s.gop % 2)) // idr_pic_id differs between consecutive IDRs
	}
	if s.o.Reorder {
		w.u(log2MaxPOCLsb, uint64(2*disp))
	}
	if !idr {
		w.u(1, 0) // num_ref_idx_active_override_flag
		w.u(1, 0) // ref_pic_list_modification_flag_l0
	}
	if idr {
		w.u(1, 0) // no_output_of_prior_pics_flag
		w.u(1, 0) // long_term_reference_flag
	} else {
		w.u(1, 0) // adaptive_ref_pic_marking_mode_flag
	}
	w.se(0) // slice_qp_delta
	w.ue(1) // disable_deblocking_filter_idc: off, keeps PCM pixels exact
}

// macroblock returns the 384 PCM samples (256 luma, 64 Cb, 64 Cr) of the
// background at macroblock address mb: a diagonal gradient that shifts and
// changes tint with each GOP, so every IDR differs.
func (s *Source) macroblock(mb int, square bool) []byte {
	px := make([]byte, 384)
	x0, y0 := (mb%s.mbW)*16, (mb/s.mbW)*16
	if square {
		for i := range 256 {
			px[i] = 235
		}
		for i := 256; i < 384; i++ {
			px[i] = 128
		}
		return px
	}
	for y := range 16 {
		for x := range 16 {
			px[y*16+x] = byte(16 + (x0+x+y0+y+8*s.gop)%220)
		}
	}
	for i := range 64 {
		px[256+i] = byte(16 + (s.gop*37)%224)
		px[320+i] = byte(16 + (y0*2+(i/8)*4)%224)
	}
	return px
}

func (s *Source) idr() []byte {
	var w bitWriter
	w.buf = make([]byte, 0, s.mbW*s.mbH*386+16)
	s.sliceHeader(&w, true, 0, 0)
	for mb := range s.mbW * s.mbH {
		w.ue(25) // mb_type I_PCM
		w.raw(s.macroblock(mb, false))
	}
	w.trailing()
	return nalu(0x65, w.buf)
}

// pFrame skips every macroblock except two I_PCM ones: the square at its
// new place and the background where it was.
func (s *Source) pFrame(k, disp int) []byte {
	mbs := s.mbW * s.mbH
	square := k % mbs
	type pcm struct {
		addr   int
		square bool
	}
	var blocks []pcm
	if s.prevSquare >= 0 && s.prevSquare != square {
		blocks = append(blocks, pcm{s.prevSquare, false})
	}
	blocks = append(blocks, pcm{square, true})
	if len(blocks) == 2 && blocks[0].addr > blocks[1].addr {
		blocks[0], blocks[1] = blocks[1], blocks[0]
	}
	s.prevSquare = square

	var w bitWriter
	s.sliceHeader(&w, false, k, disp)
	next := 0
	for _, b := range blocks {
		w.ue(uint64(b.addr - next)) // mb_skip_run
		w.ue(30)                    // mb_type I_PCM in a P slice (5 + 25)
		w.raw(s.macroblock(b.addr, b.square))
		next = b.addr + 1
	}
	if next < mbs {
		w.ue(uint64(mbs - next))
	}
	w.trailing()
	return nalu(0x41, w.buf)
}
