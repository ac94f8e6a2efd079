package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestSpotPlan(t *testing.T) {
	for _, length := range []int64{0, 1, SpotChunk * SpotChunks, SpotChunk*SpotChunks + 1, 12 << 20, 256<<20 + 7} {
		s := spotPlan(length)
		if length <= SpotChunk*SpotChunks {
			if s != nil {
				t.Errorf("%d bytes: a plan for an image checked whole", length)
			}
			continue
		}
		if len(s) != SpotChunks || s[0].off != 0 || s[len(s)-1].off+s[len(s)-1].n != length {
			t.Errorf("%d bytes: plan does not run from the first byte to the last", length)
		}
		for i := 1; i < len(s); i++ {
			if s[i].off < s[i-1].off+s[i-1].n {
				t.Errorf("%d bytes: ranges %d and %d overlap", length, i-1, i)
			}
		}
	}
}

// TestSpotRecorder: whatever sizes the writes come in, each range's hash is
// that of its bytes, and every byte is passed on.
func TestSpotRecorder(t *testing.T) {
	img := make([]byte, 12<<20+5)
	for i := range img {
		img[i] = byte(i*13 + i>>11)
	}
	for _, step := range []int{1 << 20, 32 << 10, 16<<10 + 3, 3<<20 + 1} {
		var out bytes.Buffer
		rec := &spotRecorder{w: &out, spots: spotPlan(int64(len(img)))}
		for p := img; len(p) > 0; {
			k := min(step, len(p))
			rec.Write(p[:k])
			p = p[k:]
		}
		rec.done()
		if !bytes.Equal(out.Bytes(), img) {
			t.Fatalf("step %d: bytes not passed on", step)
		}
		for _, s := range rec.spots {
			if s.want != sha256.Sum256(img[s.off:s.off+s.n]) {
				t.Errorf("step %d: range at %d hashed wrong", step, s.off)
			}
		}
	}
}

// damagingFake writes the slot with one byte flipped (or the image cut
// short), as a medium that loses writes would hold it.
type damagingFake struct {
	*Fake
	flip  int64 // offset of the flipped byte, or -1
	short bool
}

func (d *damagingFake) StreamTo(ctx context.Context, dest string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if d.flip >= 0 {
		b[d.flip] ^= 0x40
	}
	if d.short {
		b = b[:len(b)-1]
	}
	return d.Fake.StreamTo(ctx, dest, bytes.NewReader(b))
}

// TestDamagedSlot: damage inside a spot-checked range is found before the
// trial boot; damage elsewhere is found by the gate's full re-hash during
// the trial boot, which then falls back without committing.
func TestDamagedSlot(t *testing.T) {
	const size = 12 << 20
	mid := spotPlan(size)[3].off + 100
	for _, tc := range []struct {
		name    string
		flip    int64
		short   bool
		atSpots bool // found before the trial boot
	}{
		{"first byte", 0, false, true},
		{"in a middle range", mid, false, true},
		{"last byte", size - 1, false, true},
		{"one byte short", -1, true, true},
		{"between the ranges", SpotChunk + 10, false, false},
		{"just before the last range", size - SpotChunk - 1, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.image = bytes.Repeat([]byte("squashfs"), size/8)
			d := &damagingFake{Fake: r.fake, flip: tc.flip, short: tc.short}
			r.in.Target = d
			ctx := context.Background()
			err := r.in.Offer(ctx, r.keys, r.manifest(t, 2, r.image))
			if tc.atSpots {
				if err == nil || !strings.Contains(err.Error(), "does not hash") {
					t.Fatalf("offer: %v", err)
				}
				if slices.Contains(r.fake.Calls, "testboot") || r.phase(t) != RolledBack {
					t.Fatalf("calls %v, phase %q", r.fake.Calls, r.phase(t))
				}
				return
			}
			if err != nil || r.phase(t) != Trial {
				t.Fatalf("offer: %v, phase %q", err, r.phase(t))
			}
			r.fake.Boot()
			r.reopen(t)
			r.in.Target = d
			healthy := make(chan struct{})
			r.in.Health = func(ctx context.Context) error { close(healthy); <-ctx.Done(); return nil }
			err = r.in.Resume(ctx)
			if err == nil || !strings.Contains(err.Error(), "trial slot") {
				t.Fatalf("gate: %v", err)
			}
			<-healthy
			st, _ := r.in.Load()
			if st.Phase != RolledBack || st.Floor != 0 || !strings.Contains(st.Reason, "does not hash") {
				t.Fatalf("state %+v", st)
			}
			if slices.Contains(r.fake.Calls, "switch") || r.fake.Calls[len(r.fake.Calls)-1] != "reboot" {
				t.Fatalf("calls %v", r.fake.Calls)
			}
			if e := r.last(); e.Phase != RolledBack || !strings.Contains(e.Reason, "trial slot") {
				t.Fatalf("last event %+v", e)
			}
		})
	}
}

// TestGateWaitsForTheSlotHash: a healthy box with an intact slot commits
// only once both the health check and the re-hash have passed.
func TestGateWaitsForTheSlotHash(t *testing.T) {
	r := newRig(t)
	r.image = bytes.Repeat([]byte("squashfs"), (12<<20)/8)
	ctx := context.Background()
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 2, r.image)); err != nil {
		t.Fatal(err)
	}
	r.fake.Boot()
	r.reopen(t)
	r.in.Health = func(context.Context) error { return nil }
	if err := r.in.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.in.Load(); st.Phase != Committed {
		t.Fatalf("state %+v", st)
	}
	// The slot goes missing under a later trial: the gate fails.
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 3, r.image)); err != nil {
		t.Fatal(err)
	}
	r.fake.Boot()
	r.reopen(t)
	r.in.Resume(ctx) // streams v3, testboot, reboot
	r.fake.Boot()
	r.reopen(t)
	os.Remove(r.fake.Path)
	r.in.Health = func(context.Context) error { return nil }
	if err := r.in.Resume(ctx); err == nil || !strings.Contains(err.Error(), "trial slot") {
		t.Fatalf("gate with the slot gone: %v", err)
	}
}
