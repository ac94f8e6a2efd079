package hold

import (
	"errors"
	"github.com/outpost-gw/outpost/internal/cmdargs"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

var now = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func enc(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func good() map[string]any {
	return map[string]any{"id": "case-42", "camera": "door", "start": "2026-11-22T08:00:00Z", "end": "2026-11-22T10:00:00+01:00",
		"until": "2026-12-22T00:00:00Z"}
}

func with(k string, v any) map[string]any {
	m := good()
	if v == nil {
		delete(m, k)
	} else {
		m[k] = v
	}
	return m
}

func TestParseArgs(t *testing.T) {
	h, err := ParseArgs(enc(t, good()), now)
	want := Hold{ID: "case-42", Camera: "door", Start: now.Add(-2 * time.Hour), End: now.Add(-time.Hour),
		Until: time.Date(2026, 12, 22, 0, 0, 0, 0, time.UTC)}
	if err != nil || h != want {
		t.Fatalf("got %+v, %v; want %+v", h, err, want)
	}
	extra := good()
	extra["max_bytes"] = "1"
	for name, in := range map[string][]byte{
		"not a map":      enc(t, []string{"id", "x"}),
		"empty":          nil,
		"missing until":  enc(t, with("until", nil)),
		"unknown key":    enc(t, extra),
		"bad id":         enc(t, with("id", "../x")),
		"bad camera":     enc(t, with("camera", "../etc")),
		"camera as bin":  enc(t, with("camera", []byte("door"))),
		"start as int":   enc(t, with("start", 1764000000)),
		"no zone":        enc(t, with("start", "2026-11-22T08:00:00")),
		"end before":     enc(t, with("end", "2026-11-22T07:00:00Z")),
		"end = start":    enc(t, with("end", "2026-11-22T09:00:00+01:00")),
		"range too long": enc(t, with("end", "2027-01-22T08:00:00Z")),
		"until past":     enc(t, with("until", "2026-11-22T09:59:59Z")),
		"until far":      enc(t, with("until", "2028-01-01T00:00:00Z")),
		"trailing":       append(enc(t, good()), 0xc0),
		"huge":           enc(t, with("id", string(make([]byte, MaxArgBytes)))),
	} {
		if _, err := ParseArgs(in, now); !errors.Is(err, ErrArgs) {
			t.Errorf("%s: %v, want ErrArgs", name, err)
		}
	}
}

func FuzzParseArgs(f *testing.F) {
	f.Add(enc(f, good()))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseArgs(b, now)
		if err != nil {
			if !errors.Is(err, ErrArgs) {
				t.Fatalf("error %v does not wrap ErrArgs", err)
			}
			return
		}
		if !cmdargs.ValidID(h.ID) || !h.End.After(h.Start) || h.End.Sub(h.Start) > MaxRange || !h.Until.After(now) || h.Until.Sub(now) > MaxUntil {
			t.Fatalf("accepted %+v", h)
		}
	})
}

func TestParseReleaseArgs(t *testing.T) {
	if id, err := ParseReleaseArgs(enc(t, map[string]any{"id": "case-42"})); err != nil || id != "case-42" {
		t.Fatalf("got %q, %v", id, err)
	}
	for name, in := range map[string][]byte{
		"empty map": enc(t, map[string]any{}),
		"bad id":    enc(t, map[string]any{"id": "a b"}),
		"extra key": enc(t, map[string]any{"id": "a", "camera": "door"}),
		"id as bin": enc(t, map[string]any{"id": []byte("a")}),
		"trailing":  append(enc(t, map[string]any{"id": "a"}), 0xc0),
	} {
		if _, err := ParseReleaseArgs(in); !errors.Is(err, ErrArgs) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzParseReleaseArgs(f *testing.F) {
	f.Add(enc(f, map[string]any{"id": "case-42"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if id, err := ParseReleaseArgs(b); err == nil && !cmdargs.ValidID(id) {
			t.Fatalf("accepted %q", id)
		}
	})
}
