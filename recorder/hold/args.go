// Package hold keeps recordings the fleet has put on hold (an incident, a
// legal request): a time range of one camera that retention must not
// delete until the hold is released or expires. Holds live in the state
// store, so they survive restarts; Set.Held is what retention.Cleaner.Held
// asks. This file parses the "hold" and "hold.release" commands' args.
package hold

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/outpost-gw/outpost/recorder/segment"
)

// Limits of a hold.
const (
	MaxRange    = 31 * 24 * time.Hour  // end - start
	MaxUntil    = 366 * 24 * time.Hour // until - now
	MaxHolds    = 256                  // at once, over all cameras
	MaxArgBytes = 4 << 10              // the whole args value
)

// ErrArgs reports hold arguments that do not parse or are out of bounds.
var ErrArgs = errors.New("hold: bad arguments")

// Hold keeps Camera's recordings overlapping [Start, End) until Until.
type Hold struct {
	ID     string    `json:"id"` // ^[A-Za-z0-9_-]{1,64}$, chosen by the fleet
	Camera string    `json:"camera"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Until  time.Time `json:"until"`
}

// Covers reports whether a segment of h's camera spanning [start, end)
// overlaps the held range.
func (h Hold) Covers(camera string, start, end time.Time) bool {
	return h.Camera == camera && start.Before(h.End) && end.After(h.Start)
}

// ParseArgs parses the "hold" command's args strictly: a msgpack map of
// exactly the keys id, camera, start, end and until, each once, each a str
// (the times RFC 3339), nothing after it. start < end ≤ start + MaxRange,
// now < until ≤ now + MaxUntil. An unknown key is refused, not ignored.
func ParseArgs(b []byte, now time.Time) (Hold, error) {
	m, err := strictStrings(b, map[string]int{"id": 64, "camera": 64, "start": 64, "end": 64, "until": 64})
	if err != nil {
		return Hold{}, err
	}
	h := Hold{ID: m["id"], Camera: m["camera"]}
	if !segment.ValidCamera(h.Camera) {
		return Hold{}, fmt.Errorf("%w: camera %q", ErrArgs, h.Camera)
	}
	for _, f := range []struct {
		key string
		t   *time.Time
	}{{"start", &h.Start}, {"end", &h.End}, {"until", &h.Until}} {
		if *f.t, err = time.Parse(time.RFC3339, m[f.key]); err != nil {
			return Hold{}, fmt.Errorf("%w: %s: %v", ErrArgs, f.key, err)
		}
		*f.t = f.t.UTC()
	}
	switch {
	case !h.End.After(h.Start) || h.End.Sub(h.Start) > MaxRange:
		return Hold{}, fmt.Errorf("%w: end must be after start, at most %v later", ErrArgs, MaxRange)
	case !h.Until.After(now) || h.Until.Sub(now) > MaxUntil:
		return Hold{}, fmt.Errorf("%w: until must be in the future, at most %v ahead", ErrArgs, MaxUntil)
	}
	return h, nil
}

// ParseReleaseArgs parses the "hold.release" command's args: a msgpack map
// of exactly id (str).
func ParseReleaseArgs(b []byte) (id string, err error) {
	m, err := strictStrings(b, map[string]int{"id": 64})
	return m["id"], err
}

// strictStrings reads a msgpack map whose keys are exactly those of want,
// each once, each a str of at most want[key] bytes, with nothing after it;
// "id" must be a valid hold id.
func strictStrings(b []byte, want map[string]int) (map[string]string, error) {
	if len(b) > MaxArgBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrArgs, len(b), MaxArgBytes)
	}
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	n, err := dec.DecodeMapLen()
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%w: not a map", ErrArgs)
	}
	if n != len(want) {
		return nil, fmt.Errorf("%w: %d keys, want %d", ErrArgs, n, len(want))
	}
	out := map[string]string{}
	for range n {
		k, err := decodeStr(dec, 16)
		if err != nil {
			return nil, fmt.Errorf("%w: key: %v", ErrArgs, err)
		}
		max, ok := want[k]
		if !ok {
			return nil, fmt.Errorf("%w: unknown key %q", ErrArgs, k)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%w: key %q twice", ErrArgs, k)
		}
		if out[k], err = decodeStr(dec, max); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrArgs, k, err)
		}
	}
	if _, err := dec.PeekCode(); err == nil {
		return nil, fmt.Errorf("%w: trailing bytes", ErrArgs)
	}
	if !ValidID(out["id"]) {
		return nil, fmt.Errorf("%w: id %q", ErrArgs, out["id"])
	}
	return out, nil
}

// decodeStr reads a msgpack str (not bin) of at most max bytes.
func decodeStr(dec *msgpack.Decoder, max int) (string, error) {
	c, err := dec.PeekCode()
	if err != nil {
		return "", err
	}
	if !msgpcode.IsFixedString(c) && c != msgpcode.Str8 && c != msgpcode.Str16 && c != msgpcode.Str32 {
		return "", errors.New("not a string")
	}
	s, err := dec.DecodeString()
	if err == nil && len(s) > max {
		err = fmt.Errorf("longer than %d bytes", max)
	}
	return s, err
}

// ValidID reports a hold id: 1..64 of A-Z a-z 0-9 - _.
func ValidID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}
