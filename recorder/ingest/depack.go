package ingest

import (
	"bytes"
	"errors"
	"fmt"
	mbits "math/bits"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpsimpleaudio"
	"github.com/bluenviron/mediacommon/v2/pkg/bits"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/pion/rtp"
)

// errWaitKey marks video dropped while waiting for a random access point;
// it is counted, not logged.
var errWaitKey = errors.New("ingest: waiting for a key frame")

// unit is one depacketized access unit, timestamps in clock-rate ticks.
type unit struct {
	au       [][]byte
	pts, dts int64
	key      bool
}

// depacketizer turns one track's RTP packets into access units. push gets
// every packet with its PTS (PacketPTS2); errors mean something was dropped.
type depacketizer interface {
	push(pkt *rtp.Packet, pts int64) (*unit, error)
	// resync drops decoder state and waits for the next key frame.
	resync()
}

// h264Buffer mirrors whether the rtph264 decoder holds NAL units of an
// unfinished access unit, and their timestamp. The decoder also closes an
// access unit when a packet with another timestamp arrives (cameras that
// omit the marker bit); the unit it returns then has the buffered PTS,
// and the packet at hand starts the next one.
type h264Buffer struct {
	full bool
	ts   uint32
	pts  int64
}

// fragmentOnly reports an FU-A packet that does not complete its NAL unit:
// the decoder keeps it aside, not in the access unit buffer.
func fragmentOnly(payload []byte) bool {
	return len(payload) >= 2 && h264.NALUType(payload[0]&0x1f) == h264.NALUTypeFUA && payload[1]&0x40 == 0
}

// videoParams are the parameter sets a video depacketizer currently uses.
// changed is set when in-band sets replaced them; the pipeline clears it
// after passing them to the sink.
//
// In-band sets are adopted only when they arrive in the access unit of a
// key frame, parse, and refer to each other: a garbage NAL unit that
// happens to have the type of a PPS must not restart the recording.
type videoParams struct {
	vps, sps, pps []byte
	changed       bool
}

func (p *videoParams) set(vps, sps, pps []byte) {
	p.vps, p.sps, p.pps, p.changed = clone(vps), clone(sps), clone(pps), true
}

// h264Depack reassembles H264 access units: it removes AUDs and in-band
// SPS/PPS, puts the current SPS/PPS in front of every IDR, and computes
// the DTS from the PTS (reorderDTS, when the SPS allows it, else
// mediacommon's extractor), starting at an IDR.
type h264Depack struct {
	mode   int
	dec    *rtph264.Decoder
	buf    h264Buffer
	dts    dtsSource
	params videoParams
	// noReorder: this stream broke what its SPS declared; mediacommon's
	// extractor takes over for the rest of the session.
	noReorder bool
}

func newH264Depack(mode int, sps, pps []byte) (*h264Depack, error) {
	d := &h264Depack{mode: mode, params: videoParams{sps: clone(sps), pps: clone(pps)}}
	return d, d.reset()
}

func (d *h264Depack) reset() error {
	d.dec = &rtph264.Decoder{PacketizationMode: d.mode}
	d.buf = h264Buffer{}
	return d.dec.Init()
}

func (d *h264Depack) resync() { d.reset(); d.dts = nil }

func (d *h264Depack) push(pkt *rtp.Packet, pts int64) (*unit, error) {
	prev := d.buf
	nalus, err := d.dec.Decode(pkt)
	switch {
	case errors.Is(err, rtph264.ErrMorePacketsNeeded):
		if !fragmentOnly(pkt.Payload) {
			d.buf = h264Buffer{true, pkt.Timestamp, pts}
		}
		return nil, nil
	case err != nil:
		d.reset()
		return nil, fmt.Errorf("h264 depacketize: %w", err)
	}
	d.buf = h264Buffer{}
	if prev.full && pkt.Timestamp != prev.ts {
		d.buf = h264Buffer{true, pkt.Timestamp, pts}
		pts = prev.pts
	}

	au := make([][]byte, 0, len(nalus)+2)
	idr, vcl := false, false
	var sps, pps []byte
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		switch typ := h264.NALUType(n[0] & 0x1f); typ {
		case h264.NALUTypeSPS:
			sps = n
		case h264.NALUTypePPS:
			pps = n
		case h264.NALUTypeAccessUnitDelimiter, h264.NALUTypeFillerData:
		default:
			idr = idr || typ == h264.NALUTypeIDR
			vcl = vcl || (typ >= h264.NALUTypeNonIDR && typ <= h264.NALUTypeIDR)
			au = append(au, n)
		}
	}
	if !vcl {
		return nil, nil // parameter sets or SEI alone: nothing to record
	}
	if idr {
		d.inBand(sps, pps)
		if d.params.sps == nil || d.params.pps == nil {
			return nil, errors.New("h264: IDR without SPS/PPS (neither in the SDP nor in band)")
		}
		au = append([][]byte{d.params.sps, d.params.pps}, au...)
		if _, ok := d.dts.(*reorderDTS); ok && d.params.changed {
			d.dts = nil // the new SPS may reorder differently
		}
		if d.dts == nil {
			if g := newReorderDTS(d.params.sps); g != nil && !d.noReorder {
				d.dts = g
			} else {
				x := &h264.DTSExtractor{}
				x.Initialize()
				d.dts = x
			}
		}
	} else if d.dts == nil {
		return nil, errWaitKey
	}
	dts, err := d.dts.Extract(au, pts)
	if err != nil {
		d.dts = nil
		d.noReorder = d.noReorder || errors.Is(err, errReorder)
		return nil, fmt.Errorf("h264 DTS: %w", err)
	}
	return &unit{au: au, pts: pts, dts: dts, key: idr}, nil
}

// inBand adopts SPS/PPS sent along with an IDR if they differ and are sane.
func (d *h264Depack) inBand(sps, pps []byte) {
	sps, pps = or(sps, d.params.sps), or(pps, d.params.pps)
	if bytes.Equal(sps, d.params.sps) && bytes.Equal(pps, d.params.pps) {
		return
	}
	var s h264.SPS
	if s.Unmarshal(sps) == nil && h264PPSValid(pps, s.ID) {
		d.params.set(nil, sps, pps)
	}
}

// h264PPSValid parses a PPS up to its last mandatory flag (H.264 7.3.2.2)
// with range checks, and wants its SPS id and a stop bit after that:
// enough to tell a PPS from random bytes with the PPS NAL type.
func h264PPSValid(pps []byte, spsID uint32) bool {
	if len(pps) < 2 {
		return false
	}
	b, pos, ok := h264.EmulationPreventionRemove(pps[1:]), 0, true
	ue := func() uint32 {
		v, err := bits.ReadGolombUnsigned(b, &pos)
		ok = ok && err == nil
		return v
	}
	se := func() int32 {
		v, err := bits.ReadGolombSigned(b, &pos)
		ok = ok && err == nil
		return v
	}
	flags := func(n int) uint64 {
		v, err := bits.ReadBits(b, &pos, n)
		ok = ok && err == nil
		return v
	}
	ok = ue() <= 255 && ue() == spsID
	flags(2)             // entropy_coding_mode_flag, bottom_field_pic_order_in_frame_present_flag
	ok = ok && ue() == 0 // num_slice_groups_minus1: cameras do not use slice groups
	ok = ok && ue() <= 31 && ue() <= 31
	ok = ok && flags(3)&3 != 3                // weighted_pred_flag, weighted_bipred_idc ≤ 2
	for _, lim := range []int32{26, 26, 12} { // pic_init_qp/qs_minus26, chroma_qp_index_offset
		v := se()
		ok = ok && v >= -lim && v <= lim
	}
	flags(3)
	last := len(b) - 1 // rbsp_stop_one_bit: the last 1 bit, after what we read
	for last >= 0 && b[last] == 0 {
		last--
	}
	return ok && last >= 0 && last*8+7-mbits.TrailingZeros8(b[last]) >= pos
}

// h265Depack is h264Depack for H265: IDR and CRA pictures are key frames,
// VPS/SPS/PPS go in front of them, and the RASL pictures that follow a CRA
// we start on are dropped (they reference pictures we never got).
type h265Depack struct {
	dec      *rtph265.Decoder
	dts      *h265.DTSExtractor
	skipRASL bool
	params   videoParams
}

func newH265Depack(vps, sps, pps []byte) (*h265Depack, error) {
	d := &h265Depack{params: videoParams{vps: clone(vps), sps: clone(sps), pps: clone(pps)}}
	return d, d.reset()
}

func (d *h265Depack) reset() error {
	d.dec = &rtph265.Decoder{}
	return d.dec.Init()
}

func (d *h265Depack) resync() { d.reset(); d.dts = nil }

func (d *h265Depack) push(pkt *rtp.Packet, pts int64) (*unit, error) {
	nalus, err := d.dec.Decode(pkt) // closes units on the marker bit only
	switch {
	case errors.Is(err, rtph265.ErrMorePacketsNeeded):
		return nil, nil
	case err != nil:
		d.reset()
		return nil, fmt.Errorf("h265 depacketize: %w", err)
	}

	au := make([][]byte, 0, len(nalus)+3)
	key, cra, vcl, rasl := false, false, false, false
	var vps, sps, pps []byte
	for _, n := range nalus {
		if len(n) < 2 { // the NAL unit header alone is 2 bytes
			continue
		}
		switch typ := h265.NALUType((n[0] >> 1) & 0x3f); {
		case typ == h265.NALUType_VPS_NUT:
			vps = n
		case typ == h265.NALUType_SPS_NUT:
			sps = n
		case typ == h265.NALUType_PPS_NUT:
			pps = n
		case typ == h265.NALUType_AUD_NUT:
		default:
			if typ < 32 {
				vcl = true
				key = key || typ == h265.NALUType_IDR_W_RADL || typ == h265.NALUType_IDR_N_LP || typ == h265.NALUType_CRA_NUT
				cra = cra || typ == h265.NALUType_CRA_NUT
				rasl = rasl || typ == h265.NALUType_RASL_N || typ == h265.NALUType_RASL_R
			}
			au = append(au, n)
		}
	}
	if !vcl {
		return nil, nil
	}
	if key {
		d.inBand(vps, sps, pps)
		if d.params.vps == nil || d.params.sps == nil || d.params.pps == nil {
			return nil, errors.New("h265: IRAP without VPS/SPS/PPS (neither in the SDP nor in band)")
		}
		au = append([][]byte{d.params.vps, d.params.sps, d.params.pps}, au...)
		if d.dts == nil {
			d.dts = &h265.DTSExtractor{}
			d.dts.Initialize()
			d.skipRASL = cra
		}
	} else if d.dts == nil {
		return nil, errWaitKey
	} else if d.skipRASL {
		if rasl {
			return nil, errWaitKey
		}
		d.skipRASL = false
	}
	dts, err := d.dts.Extract(au, pts)
	if err != nil {
		d.dts = nil
		return nil, fmt.Errorf("h265 DTS: %w", err)
	}
	return &unit{au: au, pts: pts, dts: dts, key: key}, nil
}

// inBand adopts VPS/SPS/PPS sent along with an IRAP if they differ and
// are sane.
func (d *h265Depack) inBand(vps, sps, pps []byte) {
	vps, sps, pps = or(vps, d.params.vps), or(sps, d.params.sps), or(pps, d.params.pps)
	if bytes.Equal(vps, d.params.vps) && bytes.Equal(sps, d.params.sps) && bytes.Equal(pps, d.params.pps) {
		return
	}
	var s h265.SPS
	var p h265.PPS
	if vps != nil && s.Unmarshal(sps) == nil && p.Unmarshal(pps) == nil && p.SPSID == uint32(s.ID) {
		d.params.set(vps, sps, pps)
	}
}

// aacDepack decodes RFC 3640 (mpeg4-generic) AAC: one unit per packet,
// holding every access unit of the packet, timestamped with the first.
type aacDepack struct {
	sizeLen, indexLen, deltaLen int
	dec                         *rtpmpeg4audio.Decoder
}

func newAACDepack(sizeLen, indexLen, deltaLen int) (*aacDepack, error) {
	d := &aacDepack{sizeLen: sizeLen, indexLen: indexLen, deltaLen: deltaLen}
	return d, d.reset()
}

func (d *aacDepack) reset() error {
	d.dec = &rtpmpeg4audio.Decoder{SizeLength: d.sizeLen, IndexLength: d.indexLen, IndexDeltaLength: d.deltaLen}
	return d.dec.Init()
}

func (d *aacDepack) resync() { d.reset() }

func (d *aacDepack) push(pkt *rtp.Packet, pts int64) (*unit, error) {
	aus, err := d.dec.Decode(pkt)
	switch {
	case errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded):
		return nil, nil
	case err != nil:
		d.reset()
		return nil, fmt.Errorf("aac depacketize: %w", err)
	}
	out := aus[:0]
	for _, au := range aus {
		if len(au) > 0 {
			out = append(out, au)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("aac: empty packet")
	}
	return &unit{au: out, pts: pts, dts: pts, key: true}, nil
}

// frameDepack is for codecs that put one frame in one packet (Opus, G711):
// gortsplib's rtpsimpleaudio decoder plus an emptiness check.
type frameDepack struct{ dec rtpsimpleaudio.Decoder }

func (*frameDepack) resync() {}

func (d *frameDepack) push(pkt *rtp.Packet, pts int64) (*unit, error) {
	frame, err := d.dec.Decode(pkt)
	if err != nil {
		return nil, fmt.Errorf("audio depacketize: %w", err)
	}
	if len(frame) == 0 {
		return nil, errors.New("audio: empty packet")
	}
	return &unit{au: [][]byte{frame}, pts: pts, dts: pts, key: true}, nil
}

func or(a, b []byte) []byte {
	if a != nil {
		return a
	}
	return b
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return bytes.Clone(b)
}
