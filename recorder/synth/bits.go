package synth

import "math/bits"

// bitWriter appends big-endian bit fields, as H.264 RBSPs and AAC raw data
// blocks are written.
type bitWriter struct {
	buf  []byte
	used uint // bits used in the last byte; 0 means byte aligned
}

func (w *bitWriter) bit(b uint64) {
	if w.used == 0 {
		w.buf = append(w.buf, 0)
	}
	if b&1 != 0 {
		w.buf[len(w.buf)-1] |= 0x80 >> w.used
	}
	w.used = (w.used + 1) % 8
}

// u writes the n low bits of v, most significant first.
func (w *bitWriter) u(n int, v uint64) {
	for i := n - 1; i >= 0; i-- {
		w.bit(v >> uint(i))
	}
}

// ue writes an unsigned Exp-Golomb code.
func (w *bitWriter) ue(v uint64) {
	x := v + 1
	n := bits.Len64(x)
	w.u(n-1, 0)
	w.u(n, x)
}

// se writes a signed Exp-Golomb code.
func (w *bitWriter) se(v int64) {
	if v > 0 {
		w.ue(uint64(2*v - 1))
	} else {
		w.ue(uint64(-2 * v))
	}
}

// align pads with zero bits to the next byte boundary.
func (w *bitWriter) align() { w.used = 0 }

// raw pads to a byte boundary with zero bits (pcm_alignment_zero_bit) and
// appends whole bytes.
func (w *bitWriter) raw(p []byte) {
	w.align()
	w.buf = append(w.buf, p...)
}

// trailing writes rbsp_trailing_bits.
func (w *bitWriter) trailing() {
	w.bit(1)
	w.align()
}

// nalu builds a NAL unit from its header byte and RBSP, inserting emulation
// prevention bytes so no start code appears inside.
func nalu(header byte, rbsp []byte) []byte {
	out := make([]byte, 1, len(rbsp)+len(rbsp)/128+2)
	out[0] = header
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
