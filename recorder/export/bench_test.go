package export

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/recorder/playback"
)

// BenchmarkExport: one export of 60 s of 640x480 video with 1 s GOPs
// (I_PCM key frames, ~27 MB) to a resumable session on loopback TLS, in
// 8 MiB chunks, beside the references: reading the segment files raw, and
// one playback.Write pass. An export costs a measuring pass plus the
// upload's pass. Figures are MB/s of clip.
func BenchmarkExport(b *testing.B) {
	f := newFixtureSize(b, 60, 640, 480, 25)
	var size int64
	for _, r := range f.recs {
		size += r.Bytes
	}
	ctx := context.Background()
	start, dur := rt0, 60*time.Second
	b.Run("raw-read", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			for _, r := range f.recs {
				fh, err := os.Open(filepath.Join(f.root, r.File))
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, fh)
				fh.Close()
			}
		}
	})
	b.Run("playback-pass", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			if err := playback.Write(ctx, io.Discard, f.root, f.recs, start, dur); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("export-upload", func(b *testing.B) {
		b.SetBytes(size)
		for i := range b.N {
			rs := uploadServer()
			srv := httptest.NewTLSServer(rs)
			ev := &events{}
			e := f.exporter(b, srv, &fakeClock{}, ev, io.Discard)
			e.Up.ChunkSize = DefaultChunkSize
			ctx, cancel := context.WithCancel(context.Background())
			go e.Run(ctx)
			waitRunning(e)
			if _, err := e.Submit("export", Request{ID: fmt.Sprint("b", i), Camera: "door", Start: start, Duration: dur,
				URL: srv.URL + clipPath + "?sig=secret"}, rt0); err != nil {
				b.Fatal(err)
			}
			ev.wait(b, PhaseDone)
			cancel()
			e.Wait()
			srv.Close()
		}
	})
}
