package export

import (
	"errors"
	"github.com/outpost-gw/outpost/internal/cmdargs"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/recorder/segment"
	"github.com/vmihailenco/msgpack/v5"
)

func enc(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func good() map[string]any {
	return map[string]any{"id": "exp-1", "camera": "door", "start": "2026-11-22T10:30:00Z", "duration_s": 60, "url": "https://up.example/clip?sig=x"}
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
	r, err := ParseArgs(enc(t, good()))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Request{ID: "exp-1", Camera: "door", Start: time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC), Duration: time.Minute, URL: "https://up.example/clip?sig=x"}); r != want {
		t.Fatalf("got %+v", r)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"not a map", enc(t, []int{1}), ErrArgs},
		{"empty", nil, ErrArgs},
		{"http", enc(t, with("url", "http://up.example/clip")), ErrURL},
		{"userinfo", enc(t, with("url", "https://a:b@up.example/clip")), ErrURL},
		{"no host", enc(t, with("url", "https:///clip")), ErrURL},
		{"missing url", enc(t, with("url", nil)), ErrArgs},
		{"unknown key", enc(t, with("extra", 1)), ErrArgs},
		{"bad camera", enc(t, with("camera", "../etc")), ErrArgs},
		{"bad id", enc(t, with("id", "a b")), ErrArgs},
		{"bad start", enc(t, with("start", "yesterday")), ErrArgs},
		{"start as int", enc(t, with("start", 17)), ErrArgs},
		{"duration zero", enc(t, with("duration_s", 0)), ErrArgs},
		{"duration too long", enc(t, with("duration_s", 3601)), ErrArgs},
		{"duration as str", enc(t, with("duration_s", "60")), ErrArgs},
		{"duration float", enc(t, with("duration_s", 60.5)), ErrArgs},
		{"url as bin", enc(t, with("url", []byte("https://up.example/"))), ErrArgs},
		{"trailing", append(enc(t, good()), 0x01), ErrArgs},
		{"duplicate key", append([]byte{0x85, 0xa2, 'i', 'd', 0xa1, 'a'}, enc(t, good())[1:]...)[:40], ErrArgs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseArgs(tc.in); !errors.Is(err, tc.want) {
				t.Errorf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzParseArgs(f *testing.F) {
	f.Add(enc(f, good()))
	f.Add(enc(f, with("url", "http://x/")))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseArgs(b)
		if err != nil {
			return
		}
		if CheckURL(r.URL) != nil || r.Duration <= 0 || r.Duration > MaxDuration || !segment.ValidCamera(r.Camera) || !cmdargs.ValidID(r.ID) {
			t.Fatalf("accepted %+v", r)
		}
	})
}

func goodSnap() map[string]any {
	return map[string]any{"id": "snap-1", "camera": "door", "url": "https://up.example/s.mp4?sig=x"}
}

func TestParseSnapshotArgs(t *testing.T) {
	r, err := ParseSnapshotArgs(enc(t, goodSnap()))
	if want := (SnapshotRequest{ID: "snap-1", Camera: "door", URL: "https://up.example/s.mp4?sig=x"}); err != nil || r != want {
		t.Fatalf("got %+v, %v", r, err)
	}
	snapWith := func(k string, v any) map[string]any {
		m := goodSnap()
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"not a map", enc(t, "x"), ErrArgs},
		{"http", enc(t, snapWith("url", "http://up.example/s")), ErrURL},
		{"missing camera", enc(t, snapWith("camera", nil)), ErrArgs},
		{"unknown key", enc(t, snapWith("start", "2026-11-22T10:30:00Z")), ErrArgs},
		{"bad camera", enc(t, snapWith("camera", "Door/..")), ErrArgs},
		{"id as int", enc(t, snapWith("id", 7)), ErrArgs},
		{"trailing", append(enc(t, goodSnap()), 0xc0), ErrArgs},
		{"duplicate key", []byte{0x83, 0xa2, 'i', 'd', 0xa1, 'a', 0xa2, 'i', 'd', 0xa1, 'b', 0xa3, 'u', 'r', 'l', 0xa1, 'c'}, ErrArgs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseSnapshotArgs(tc.in); !errors.Is(err, tc.want) {
				t.Errorf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzParseSnapshotArgs(f *testing.F) {
	f.Add(enc(f, goodSnap()))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseSnapshotArgs(b)
		if err == nil && (CheckURL(r.URL) != nil || !segment.ValidCamera(r.Camera) || !cmdargs.ValidID(r.ID)) {
			t.Fatalf("accepted %+v", r)
		}
	})
}

func TestParseCancelArgs(t *testing.T) {
	if id, err := ParseCancelArgs(enc(t, map[string]any{"id": "exp-1"})); err != nil || id != "exp-1" {
		t.Fatalf("got %q, %v", id, err)
	}
	for name, in := range map[string][]byte{
		"empty map":   enc(t, map[string]any{}),
		"bad id":      enc(t, map[string]any{"id": "../x"}),
		"extra key":   enc(t, map[string]any{"id": "a", "camera": "door"}),
		"id as bin":   enc(t, map[string]any{"id": []byte("a")}),
		"not a map":   enc(t, []string{"id", "a"}),
		"trailing":    append(enc(t, map[string]any{"id": "a"}), 0xc0),
		"unknown key": enc(t, map[string]any{"ids": "a"}),
	} {
		if _, err := ParseCancelArgs(in); !errors.Is(err, ErrArgs) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzParseCancelArgs(f *testing.F) {
	f.Add(enc(f, map[string]any{"id": "exp-1"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if id, err := ParseCancelArgs(b); err == nil && !cmdargs.ValidID(id) {
			t.Fatalf("accepted %q", id)
		}
	})
}
