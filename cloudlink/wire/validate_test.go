package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// hx decodes hex with spaces.
func hx(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func TestValidateAccepts(t *testing.T) {
	for _, s := range []string{
		"c0", "c2", "c3", "00", "7f", "e0", "ff", "a0", "90", "80",
		"cc ff", "cd ffff", "ce ffffffff", "cf ffffffffffffffff",
		"d0 80", "d1 8000", "d2 80000000", "d3 8000000000000000",
		"ca 3f800000", "cb 3ff0000000000000",
		"a3 616263", "d9 03 616263", "da 0003 616263", "db 00000003 616263",
		"c4 00", "c4 02 0102", "c5 0002 0102", "c6 00000002 0102",
		"92 01 92 02 90", "dc 0002 c0 c0", "dd 00000001 c0",
		"82 a1 61 01 a1 62 81 a0 90", "de 0001 a0 c0", "df 00000001 a0 c0",
		"91 91 91 91 91 91 91 91 91 91 91 91 91 91 91 90", // depth 16
	} {
		if err := Validate(hx(s), DefaultLimits()); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	nested := bytes.Repeat([]byte{0x91}, 100_000)
	big64M := append(hx("dd 04000000"), make([]byte, 1000)...)
	for _, c := range []struct {
		name string
		in   []byte
		lim  Limits
		want error
		off  int
	}{
		// The field-notes killers: each is fatal or huge in msgpack.Unmarshal.
		{"dd ffffffff", hx("dd ffffffff"), Limits{}, ErrTruncated, 0},
		{"df ffffffff", hx("df ffffffff"), Limits{}, ErrTruncated, 0},
		{"dc ffff", hx("dc ffff"), Limits{}, ErrTruncated, 0},
		{"64M array", big64M, Limits{}, ErrTruncated, 0},
		{"64M array, huge input allowed", big64M, Limits{MaxBytes: 1 << 30}, ErrTruncated, 0},
		{"100k nested arrays", nested, Limits{}, ErrTooDeep, 16},
		{"nested map values", bytes.Repeat(hx("81 a0"), 17), Limits{}, ErrTooDeep, 32},
		// Counts the enclosing containers still owe are counted too.
		{"owed by parent", hx("92 dc 0003 c0 c0 c0"), Limits{}, ErrTruncated, 1},
		{"map needs 2 per entry", hx("82 a0 c0 a0"), Limits{}, ErrTruncated, 0},
		{"elements", hx("9b 00 00 00 00 00 00 00 00 00 00 00"), Limits{MaxElements: 10}, ErrTooMany, 0},
		{"elements nested", hx("92 93 00 00 00 93 00 00 00"), Limits{MaxElements: 6}, ErrTooMany, 5},
		// Truncation.
		{"empty", nil, Limits{}, ErrTruncated, 0},
		{"fixstr", hx("a5 6162"), Limits{}, ErrTruncated, 0},
		{"str8 header", hx("d9"), Limits{}, ErrTruncated, 0},
		{"str32", hx("db 00000010 61"), Limits{}, ErrTruncated, 0},
		{"bin8", hx("c4 05 01"), Limits{}, ErrTruncated, 0},
		{"bin16 header", hx("c5 00"), Limits{}, ErrTruncated, 0},
		{"bin32 huge", hx("c6 ffffffff 00"), Limits{}, ErrTruncated, 0},
		{"uint64", hx("cf 0102"), Limits{}, ErrTruncated, 0},
		{"float64", hx("cb 00"), Limits{}, ErrTruncated, 0},
		{"array missing item", hx("92 c0"), Limits{}, ErrTruncated, 0},
		{"map missing value", hx("81 a1 61"), Limits{}, ErrTruncated, 3},
		// Trailing bytes.
		{"two values", hx("c0 c0"), Limits{}, ErrTrailing, 1},
		{"garbage after array", hx("91 01 ff ff"), Limits{}, ErrTrailing, 2},
		// Malformed.
		{"reserved c1", hx("c1"), Limits{}, ErrMalformed, 0},
		{"reserved c1 nested", hx("92 01 c1"), Limits{}, ErrMalformed, 2},
		{"fixext1", hx("d4 01 00"), Limits{}, ErrMalformed, 0},
		{"timestamp ext -1", hx("d6 ff 00000001"), Limits{}, ErrMalformed, 0},
		{"ext8", hx("c7 01 05 00"), Limits{}, ErrMalformed, 0},
		{"ext32 huge", hx("c9 ffffffff 05"), Limits{}, ErrMalformed, 0},
		{"int map key", hx("81 01 02"), Limits{}, ErrMalformed, 1},
		{"array map key", hx("81 90 02"), Limits{}, ErrMalformed, 1},
		{"nil map key", hx("82 a0 00 c0 00"), Limits{}, ErrMalformed, 3},
		// Size.
		{"over MaxBytes", make([]byte, 256<<10+1), Limits{}, ErrTooLarge, 0},
		{"over small MaxBytes", hx("a3 616263"), Limits{MaxBytes: 3}, ErrTooLarge, 0},
		{"str over MaxStrLen", hx("92 00 a3 616263"), Limits{MaxStrLen: 2}, ErrTooLarge, 2},
	} {
		start := time.Now()
		err := Validate(c.in, c.lim)
		var we *Error
		if !errors.Is(err, c.want) || !errors.As(err, &we) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
			continue
		}
		if we.Offset != c.off {
			t.Errorf("%s: offset %d, want %d (%v)", c.name, we.Offset, c.off, err)
		}
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Errorf("%s: took %v", c.name, d)
		}
	}
}

func TestErrorMessage(t *testing.T) {
	err := Validate(bytes.Repeat([]byte{0x91}, 100_000), Limits{})
	if got := err.Error(); got != "wire: offset 16: nested too deep: depth 17, limit 16" {
		t.Errorf("message %q", got)
	}
}

// TestValidateAllocs: the walk itself allocates nothing on valid input.
func TestValidateAllocs(t *testing.T) {
	raw := sampleEnvelope(t, sampleBodies()[0])
	if n := testing.AllocsPerRun(100, func() { _ = Validate(raw, DefaultLimits()) }); n != 0 {
		t.Errorf("%v allocations per Validate", n)
	}
}

// TestDecodeMemoryBound decodes hostile inputs and checks that the bytes
// allocated stay within a small multiple of the input size. DecodeBody may
// allocate more than Decode (msgpack pre-sizes maps from the declared
// count, which Validate bounds by the input size): loosely ≤ 64×.
func TestDecodeMemoryBound(t *testing.T) {
	deepish := bytes.Repeat([]byte{0x91}, 100_000)
	// A telemetry envelope whose metrics map has 32764 entries, each the
	// smallest possible (a0 00 = "" → 0), as many as MaxElements allows:
	// msgpack makes a map sized for all of them, which then holds one.
	wide := append(hx("81 a7 6d657472696373 de 7ffc"), bytes.Repeat(hx("a0 00"), 0x7ffc)...)
	wideEnv, err := Encode(Envelope{V: Version, ID: fixedID, Time: t0, Type: TypeTelemetry, Body: wide})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		in   []byte
	}{
		{"dd ffffffff", hx("dd ffffffff")},
		{"df ffffffff", hx("df ffffffff")},
		{"dc ffff", hx("dc ffff")},
		{"64M array", append(hx("95 01 c4 10"), append(fixedID[:], hx("00 a1 61 dd 04000000")...)...)},
		{"100k nested", deepish},
		{"wide map", wideEnv},
	} {
		perRun := func(f func()) uint64 {
			var a, b runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&a)
			for range 10 {
				f()
			}
			runtime.ReadMemStats(&b)
			return (b.TotalAlloc - a.TotalAlloc) / 10
		}
		var e Envelope
		var derr error
		n := perRun(func() { e, derr = Decode(c.in, DefaultLimits()) })
		if n > uint64(4*len(c.in)+4096) {
			t.Errorf("%s: Decode allocated %d bytes for %d input bytes", c.name, n, len(c.in))
		}
		if derr != nil {
			continue
		}
		n = perRun(func() { _ = DecodeBody(e, &Telemetry{}, DefaultLimits()) })
		t.Logf("%s: DecodeBody allocated %d bytes for %d input bytes", c.name, n, len(c.in))
		if n > uint64(64*len(c.in)) {
			t.Errorf("%s: DecodeBody allocated %d bytes for %d input bytes", c.name, n, len(c.in))
		}
	}
}
