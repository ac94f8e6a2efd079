package ingest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/rtptime"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/rtsptest"
	"github.com/pion/rtp"
)

// h264Packets packetizes frames (with SPS/PPS in front of IDRs when
// inBand), 40 ms apart from ts on, in payloads of at most maxPayload.
func h264Packets(t testing.TB, st rtsptest.H264Stream, frames int, ts uint32, inBand bool, maxPayload int) []*rtp.Packet {
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1, PayloadMaxSize: maxPayload}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	var out []*rtp.Packet
	for i := range frames {
		au := st.Frames[i%len(st.Frames)]
		if inBand && au[0][0]&0x1f == 5 {
			au = append([][]byte{st.SPS, st.PPS}, au...)
		}
		pkts, err := enc.Encode(au)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts {
			p.Timestamp = ts + uint32(i*3600)
		}
		out = append(out, pkts...)
	}
	return out
}

// feed runs packets through p at 25 fps of wall clock, decoding PTS as
// the client does.
func feed(p *pipeline, f format.Format, pkts []*rtp.Packet, now *time.Time) {
	var dec rtptime.GlobalDecoder2
	dec.Initialize()
	ptsOf := func(pkt *rtp.Packet) (int64, bool) { return dec.Decode(f, pkt) }
	last := pkts[0].Timestamp
	for _, pkt := range pkts {
		if pkt.Timestamp != last {
			*now = now.Add(40 * time.Millisecond)
			last = pkt.Timestamp
		}
		p.packet(0, pkt, *now, ptsOf)
	}
}

// In-band parameter sets that differ from the SDP's restart the sink at
// the next IDR with the new Track; repeats do not; a garbage "PPS" next
// to an IDR is ignored.
func TestInBandParamsChange(t *testing.T) {
	a, b := testH264(160, 128, 10, 25), testH264(320, 240, 10, 25)
	sink := newCheckSink()
	now := time.Unix(1e9, 0)
	f := &format.H264{PayloadTyp: 96, SPS: a.SPS, PPS: a.PPS, PacketizationMode: 1}
	dep, _ := newH264Depack(1, a.SPS, a.PPS)
	p := newPipeline(sink, &health{}, []recorder.Track{{Codec: recorder.H264, ClockRate: 90000, SPS: a.SPS, PPS: a.PPS}},
		[]depacketizer{dep}, now)

	pkts := h264Packets(t, a, 20, 1000, false, 0)
	pkts = append(pkts, h264Packets(t, b, 30, 1000+20*3600, true, 0)...)
	// An IDR of b with a bogus PPS-typed NAL unit in its access unit.
	bogus := b.Frames[0]
	bogus = [][]byte{{0x68, 0xff, 0xff, 0xff}, bogus[0]}
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1}
	enc.Init()
	extra, _ := enc.Encode(bogus)
	for _, x := range extra {
		x.Timestamp = 1000 + 50*3600
	}
	pkts = append(pkts, extra...)
	feed(p, f, pkts, &now)

	sink.verify(t)
	sink.view(func(s *checkSink) {
		if len(s.starts) != 2 || len(s.ends) != 1 || !errors.Is(s.ends[0], ErrParamsChanged) {
			t.Fatalf("%d starts, ends %v", len(s.starts), s.ends)
		}
		if tr := s.starts[1][0]; !bytes.Equal(tr.SPS, b.SPS) || !bytes.Equal(tr.PPS, b.PPS) {
			t.Error("second Start lacks the in-band parameter sets")
		}
		if s.counts[0] != 51 {
			t.Errorf("%d samples, want 51", s.counts[0])
		}
		if last := s.keep[len(s.keep)-1]; !bytes.Equal(last.AU[1], b.PPS) {
			t.Error("bogus PPS adopted")
		}
	})
}

// The timestamp split of the rtph264 decoder (no marker bits): each unit
// still gets its own PTS.
func TestH264WithoutMarkers(t *testing.T) {
	st := testH264(160, 128, 10, 25)
	sink := newCheckSink()
	now := time.Unix(1e9, 0)
	f := &format.H264{PayloadTyp: 96, SPS: st.SPS, PPS: st.PPS, PacketizationMode: 1}
	dep, _ := newH264Depack(1, st.SPS, st.PPS)
	p := newPipeline(sink, &health{}, []recorder.Track{{Codec: recorder.H264, ClockRate: 90000, SPS: st.SPS, PPS: st.PPS}},
		[]depacketizer{dep}, now)
	pkts := h264Packets(t, st, 20, 5, false, 500)
	for _, x := range pkts {
		x.Marker = false
	}
	feed(p, f, pkts, &now)
	sink.verify(t)
	sink.view(func(s *checkSink) {
		if s.counts[0] != 19 { // the last unit waits for a next timestamp
			t.Fatalf("%d samples, want 19", s.counts[0])
		}
		for i, x := range s.keep {
			if x.DTS != time.Duration(i)*40*time.Millisecond || !bytes.Equal(x.AU[len(x.AU)-1], st.Frames[i%10][0]) {
				t.Fatalf("sample %d: DTS %v", i, x.DTS)
			}
		}
	})
}

// FuzzDepacketize feeds arbitrary RTP packets through the depacketize +
// sample path of each codec and checks the sink contract. Input: a codec
// selector, then packets as [flags][timestamp delta, 2 bytes][length, 2
// bytes][payload]; flags bit 0 is the marker, bit 1 skips a sequence
// number, bit 2 makes the delta negative. The seed corpus in testdata holds
// real streams of each codec (encodeFuzz made them).
func FuzzDepacketize(f *testing.F) {
	st := testH264(32, 32, 5, 25) // the committed H264 seeds use its SPS/PPS
	f.Fuzz(func(t *testing.T, codec byte, data []byte) {
		var tr recorder.Track
		var dep depacketizer
		var forma format.Format
		switch codec % 4 {
		case 0:
			tr = recorder.Track{Codec: recorder.H264, ClockRate: 90000, SPS: st.SPS, PPS: st.PPS}
			dep, _ = newH264Depack(1, st.SPS, st.PPS)
			forma = &format.H264{PayloadTyp: 96, SPS: st.SPS, PPS: st.PPS, PacketizationMode: 1}
		case 1: // parameter sets only in band
			tr = recorder.Track{Codec: recorder.H265, ClockRate: 90000}
			dep, _ = newH265Depack(nil, nil, nil)
			forma = &format.H265{PayloadTyp: 96}
		case 2:
			cfg := &mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 1}
			tr = recorder.Track{Codec: recorder.AAC, ClockRate: 48000, Channels: 1}
			dep, _ = newAACDepack(13, 3, 3)
			forma = &format.MPEG4Audio{PayloadTyp: 96, Config: cfg, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
		default:
			tr = recorder.Track{Codec: recorder.Opus, ClockRate: 48000, Channels: 2}
			dep = &frameDepack{}
			forma = &format.Opus{PayloadTyp: 96, ChannelCount: 2}
		}
		sink := newCheckSink()
		now := time.Unix(1e9, 0)
		p := newPipeline(sink, &health{}, []recorder.Track{tr}, []depacketizer{dep}, now)
		var dec rtptime.GlobalDecoder2
		dec.Initialize()
		ptsOf := func(pkt *rtp.Packet) (int64, bool) { return dec.Decode(forma, pkt) }
		var seq uint16
		var ts uint32 = 1234
		for len(data) >= 5 {
			flags, delta, n := data[0], binary.BigEndian.Uint16(data[1:]), int(binary.BigEndian.Uint16(data[3:]))
			data = data[5:]
			n = min(n, len(data))
			if flags&4 != 0 {
				ts -= uint32(delta)
			} else {
				ts += uint32(delta)
			}
			if flags&2 != 0 {
				seq++
			}
			pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, Marker: flags&1 != 0,
				SequenceNumber: seq, Timestamp: ts}, Payload: data[:n]}
			data = data[n:]
			seq++
			now = now.Add(10 * time.Millisecond)
			p.packet(0, pkt, now, ptsOf)
		}
		sink.verify(t)
	})
}

func encodeFuzz(pkts []*rtp.Packet) []byte {
	var out []byte
	var last uint32
	for i, p := range pkts {
		var flags byte
		if p.Marker {
			flags |= 1
		}
		delta := p.Timestamp - last
		if i == 0 {
			delta = 0
		}
		last = p.Timestamp
		out = append(out, flags, byte(delta>>8), byte(delta), byte(len(p.Payload)>>8), byte(len(p.Payload)))
		out = append(out, p.Payload...)
	}
	return out
}
