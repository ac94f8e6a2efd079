package segment

import (
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/synth"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkWrite records a 4 Mbit/s stream (320x240 I_PCM IDR every 2 s,
// P frames padded with filler NAL units to 18 KB, 25 fps) with the default
// 60 s segments and 1 s parts. One op is one second of stream; MB/s is how
// fast the writer could go. cpu-%/stream is the process CPU (user+sys,
// including the kernel's fsync work) per second of real-time stream, and
// µs/fsync the cost of making one part durable. SEGMENT_BENCH_DIR picks the
// disk (default: the test's temporary directory).
func BenchmarkWrite(b *testing.B) {
	const fps, gop, rate = 25, 50, 4_000_000 / 8
	src, err := synth.New(synth.Options{Width: 320, Height: 240, FPS: fps, GOP: gop, Start: t0})
	if err != nil {
		b.Fatal(err)
	}
	samples := make([]recorder.Sample, gop)
	for i := range samples {
		samples[i] = src.Next()
	}
	pad := (2*rate - len(samples[0].AU[2])) / (gop - 1)
	for i := 1; i < gop; i++ {
		filler := make([]byte, pad-len(samples[i].AU[0]))
		filler[0] = 12 // filler data NAL unit
		for j := 1; j < len(filler)-1; j++ {
			filler[j] = 0xFF
		}
		filler[len(filler)-1] = 0x80
		samples[i].AU = append(samples[i].AU, filler)
	}
	for _, sync := range []bool{true, false} {
		name := "fsync"
		if !sync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			dir := os.Getenv("SEGMENT_BENCH_DIR")
			if dir == "" {
				dir = b.TempDir()
			} else {
				dir, err = os.MkdirTemp(dir, "bench")
				if err != nil {
					b.Fatal(err)
				}
				defer os.RemoveAll(dir)
			}
			w := newWriter(b, Config{Dir: dir}, nil)
			w.noSync = !sync
			if err := w.Start([]recorder.Track{src.Track()}); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(rate)
			b.ResetTimer()
			cpu0 := cpuTime()
			n := 0
			for b.Loop() {
				for range fps {
					s := samples[n%gop]
					off := time.Duration(n/gop) * gop * time.Second / fps
					s.DTS += off
					s.PTS += off
					s.Received = s.Received.Add(off)
					if err := w.Write(s); err != nil {
						b.Fatal(err)
					}
					n++
				}
			}
			w.End(nil)
			b.StopTimer()
			st := w.Stats()
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/float64(time.Second)*100, "cpu-%/stream")
			if st.Parts > 0 && sync {
				b.ReportMetric(float64(st.SyncTotal.Microseconds())/float64(st.Parts), "µs/fsync")
				b.ReportMetric(float64(st.SyncMax.Microseconds()), "µs-max/fsync")
			}
		})
	}
}
