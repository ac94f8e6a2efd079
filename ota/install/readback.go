package install

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/outpost-gw/outpost/ota/manifest"
)

// The written root slot is read back from the medium twice, at two costs:
//
//   - before the trial boot, a spot check: SpotChunks chunks of SpotChunk
//     bytes (the first, the last, the others spread evenly between), each
//     against the hash of the same range taken while it streamed past. It
//     catches the cheap failures at once: a short or missing write, the
//     wrong partition, writes a card lost or wrapped round (fake-capacity
//     cards), and costs at most 8 MiB of reads. An image of up to 8 MiB is
//     checked whole.
//   - during the trial boot, before the commit, the whole slot against the
//     signed digest (the gate, beside the health check). A slot that does
//     not hash to what was signed is never made permanent.
//
// A full read-back before the reboot would add the medium's read time to
// every install (about half the write time on an SD card); the box would
// then take far longer than a plain write of the same bytes. Split this
// way the install costs a write plus ~3 %, and nothing unverified commits:
// a slot corrupt outside the spot checks is caught at the gate, or does not
// boot, and either way the box falls back by itself.
const (
	SpotChunk  = 1 << 20
	SpotChunks = 8
)

// Slot is a written partition opened for reading back.
type Slot interface {
	io.ReaderAt
	io.Closer
}

// spot is one checked range and the hash of what streamed through it.
type spot struct {
	off, n int64
	h      hash.Hash
	want   [32]byte
}

// spotPlan picks the ranges a spot check reads for an image of length
// bytes; nil means the image is small enough to be checked whole.
func spotPlan(length int64) []*spot {
	if length <= SpotChunk*SpotChunks {
		return nil
	}
	s := make([]*spot, SpotChunks)
	for i := range s {
		off := int64(i) * (length - SpotChunk) / (SpotChunks - 1)
		s[i] = &spot{off: off, n: SpotChunk, h: sha256.New()}
	}
	return s
}

// spotRecorder passes writes on to w, hashes the bytes that fall in the
// planned ranges (writes come in stream order) and tells the writeback how
// far the stream has got.
type spotRecorder struct {
	w       io.Writer
	spots   []*spot
	pos     int64
	advance func(int64) // the stream passed pos (Writeback.Advance), or nil
}

func (r *spotRecorder) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	p = p[:n]
	for _, s := range r.spots {
		lo, hi := max(s.off, r.pos), min(s.off+s.n, r.pos+int64(n))
		if lo < hi {
			s.h.Write(p[lo-r.pos : hi-r.pos])
		}
	}
	r.pos += int64(n)
	if r.advance != nil {
		r.advance(r.pos)
	}
	return n, err
}

// done seals the recorded hashes once the stream has ended.
func (r *spotRecorder) done() {
	for _, s := range r.spots {
		s.want = [32]byte(s.h.Sum(nil))
	}
}

var errSlotMismatch = errors.New("install: written root partition does not hash to the signed digest")

// spotCheck reads the planned ranges back from the slot (the whole image
// when there is no plan).
func spotCheck(rb ReadBacker, art manifest.Artifact, spots []*spot) error {
	if spots == nil {
		return fullCheck(rb, art)
	}
	slot, err := rb.ReadBack("root")
	if err != nil {
		return fmt.Errorf("read back root: %w", err)
	}
	defer slot.Close()
	buf := make([]byte, SpotChunk)
	for _, s := range spots {
		if _, err := slot.ReadAt(buf[:s.n], s.off); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w (the partition ends before byte %d)", errSlotMismatch, s.off+s.n)
			}
			return fmt.Errorf("read back root at %d: %w", s.off, err)
		}
		if sha256.Sum256(buf[:s.n]) != s.want {
			return fmt.Errorf("%w (bytes %d to %d differ from what was streamed)", errSlotMismatch, s.off, s.off+s.n)
		}
	}
	return nil
}

// fullCheck re-hashes the whole written image from the slot.
func fullCheck(rb ReadBacker, art manifest.Artifact) error {
	slot, err := rb.ReadBack("root")
	if err != nil {
		return fmt.Errorf("read back root: %w", err)
	}
	defer slot.Close()
	sum, n, err := hashPipelined(io.NewSectionReader(slot, 0, art.Length))
	if err != nil {
		return fmt.Errorf("read back root: %w", err)
	}
	if n != art.Length || sum != art.SHA256 {
		return errSlotMismatch
	}
	return nil
}

// checkTrialSlot is the gate's full check of the slot the trial boot runs,
// against the root artifact of the stored (verified at the offer) manifest.
func checkTrialSlot(ctx context.Context, rb ReadBacker, manifestDoc []byte) error {
	m, _, err := manifest.ParseManifestUnverified(manifestDoc)
	if err != nil {
		return fmt.Errorf("stored manifest: %w", err)
	}
	art, err := m.Artifact("root")
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- fullCheck(rb, art) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("re-hash of the slot not finished: %w", ctx.Err())
	}
}

// hashPipelined hashes r, reading the next MiB while the last one is
// hashed: the read-back is a disk read beside a SHA-256, and done one after
// the other they add up (measured: 0.5 s for 256 MiB here, of which the
// read took two thirds). Three buffers, 3 MiB in all.
func hashPipelined(r io.Reader) (sum [32]byte, n int64, err error) {
	const size, depth = 1 << 20, 3
	free := make(chan []byte, depth)
	for range depth {
		free <- make([]byte, size)
	}
	full := make(chan []byte, depth)
	var rerr error
	go func() {
		defer close(full)
		for buf := range free {
			k, err := io.ReadFull(r, buf)
			if k > 0 {
				full <- buf[:k]
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return
			}
			if err != nil {
				rerr = err
				return
			}
		}
	}()
	h := sha256.New()
	for buf := range full {
		h.Write(buf)
		n += int64(len(buf))
		free <- buf[:cap(buf)]
	}
	close(free) // the reader has ended (full is closed)
	if rerr != nil {
		return sum, n, rerr
	}
	return [32]byte(h.Sum(nil)), n, nil
}
