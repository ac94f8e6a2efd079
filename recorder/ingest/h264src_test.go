package ingest

import "github.com/outpost-gw/outpost/recorder/rtsptest"

// A minimal H264 source for tests, without an encoder: Constrained
// Baseline, pic_order_cnt_type 2, IDR frames made of I_PCM macroblocks and
// P frames that skip every macroblock. ffmpeg decodes it without errors.

type bitWriter struct {
	b []byte
	n uint // bits used in the last byte; 0 = byte-aligned
}

func (w *bitWriter) bit(v uint) {
	if w.n == 0 {
		w.b = append(w.b, 0)
	}
	if v != 0 {
		w.b[len(w.b)-1] |= 0x80 >> w.n
	}
	w.n = (w.n + 1) % 8
}

func (w *bitWriter) bits(v uint64, n int) {
	for i := n - 1; i >= 0; i-- {
		w.bit(uint(v>>i) & 1)
	}
}

func (w *bitWriter) ue(v uint) {
	x, l := uint64(v)+1, 0
	for y := x; y > 0; y >>= 1 {
		l++
	}
	w.bits(0, l-1)
	w.bits(x, l)
}

func (w *bitWriter) se(v int) {
	if v > 0 {
		w.ue(uint(2*v - 1))
	} else {
		w.ue(uint(-2 * v))
	}
}

func (w *bitWriter) align() {
	for w.n != 0 {
		w.bit(0)
	}
}

func (w *bitWriter) trailing() { w.bit(1); w.align() }

// nalu adds the header byte and emulation prevention to an RBSP.
func nalu(header byte, rbsp []byte) []byte {
	out := []byte{header}
	zeros := 0
	for _, b := range rbsp {
		if zeros >= 2 && b <= 3 {
			out = append(out, 3)
			zeros = 0
		}
		out = append(out, b)
		if b == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return out
}

// testH264 returns a stream of w×h pixels (multiples of 16) with an IDR
// frame every gop frames; frames vary so that they are not identical.
func testH264(w, h, gop, fps int) rtsptest.H264Stream {
	mbs := (w / 16) * (h / 16)
	var sps bitWriter
	sps.bits(66, 8)   // profile_idc: Baseline
	sps.bits(0xc0, 8) // constraint_set0+1: Constrained Baseline
	sps.bits(30, 8)   // level_idc 3.0
	sps.ue(0)         // seq_parameter_set_id
	sps.ue(0)         // log2_max_frame_num_minus4
	sps.ue(2)         // pic_order_cnt_type
	sps.ue(1)         // max_num_ref_frames
	sps.bit(0)        // gaps_in_frame_num_value_allowed_flag
	sps.ue(uint(w/16 - 1))
	sps.ue(uint(h/16 - 1))
	sps.bit(1) // frame_mbs_only_flag
	sps.bit(1) // direct_8x8_inference_flag
	sps.bit(0) // frame_cropping_flag
	sps.bit(0) // vui_parameters_present_flag
	sps.trailing()

	var pps bitWriter
	pps.ue(0)      // pic_parameter_set_id
	pps.ue(0)      // seq_parameter_set_id
	pps.bit(0)     // entropy_coding_mode_flag: CAVLC
	pps.bit(0)     // bottom_field_pic_order_in_frame_present_flag
	pps.ue(0)      // num_slice_groups_minus1
	pps.ue(0)      // num_ref_idx_l0_default_active_minus1
	pps.ue(0)      // num_ref_idx_l1_default_active_minus1
	pps.bit(0)     // weighted_pred_flag
	pps.bits(0, 2) // weighted_bipred_idc
	pps.se(0)      // pic_init_qp_minus26
	pps.se(0)      // pic_init_qs_minus26
	pps.se(0)      // chroma_qp_index_offset
	pps.bit(1)     // deblocking_filter_control_present_flag
	pps.bit(0)     // constrained_intra_pred_flag
	pps.bit(0)     // redundant_pic_cnt_present_flag
	pps.trailing()

	st := rtsptest.H264Stream{SPS: nalu(0x67, sps.b), PPS: nalu(0x68, pps.b), FPS: fps}
	for i := range gop {
		var s bitWriter
		s.ue(0) // first_mb_in_slice
		if i == 0 {
			s.ue(7)      // slice_type: I (all slices)
			s.ue(0)      // pic_parameter_set_id
			s.bits(0, 4) // frame_num
			s.ue(0)      // idr_pic_id
			s.bit(0)     // no_output_of_prior_pics_flag
			s.bit(0)     // long_term_reference_flag
			s.se(0)      // slice_qp_delta
			s.ue(1)      // disable_deblocking_filter_idc
			for mb := range mbs {
				s.ue(25) // mb_type: I_PCM
				s.align()
				for j := range 384 { // 256 luma + 2×64 chroma samples, never 0
					s.b = append(s.b, byte(16+(mb*7+j/16*3+j)%200))
				}
			}
			s.trailing()
			st.Frames = append(st.Frames, [][]byte{nalu(0x65, s.b)})
			continue
		}
		s.ue(5)                 // slice_type: P (all slices)
		s.ue(0)                 // pic_parameter_set_id
		s.bits(uint64(i%16), 4) // frame_num
		s.bit(0)                // num_ref_idx_active_override_flag
		s.bit(0)                // ref_pic_list_modification_flag_l0
		s.bit(0)                // adaptive_ref_pic_marking_mode_flag
		s.se(0)                 // slice_qp_delta
		s.ue(1)                 // disable_deblocking_filter_idc
		s.ue(uint(mbs))         // mb_skip_run: all
		s.trailing()
		st.Frames = append(st.Frames, [][]byte{nalu(0x41, s.b)})
	}
	return st
}
