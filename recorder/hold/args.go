// Package hold keeps recordings the fleet has put on hold (an incident, a
// legal request): a time range of one camera that retention must not
// delete until the hold is released or expires. Holds live in the state
// store, so they survive restarts; Set.Held is what retention.Cleaner.Held
// asks. This file parses the "hold" and "hold.release" commands' args.
package hold

import (
	"errors"
	"fmt"
	"time"

	"github.com/outpost-gw/outpost/internal/cmdargs"
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

// strictStrings is cmdargs.Strings with this package's limit and error.
func strictStrings(b []byte, want map[string]int) (map[string]string, error) {
	m, err := cmdargs.Strings(b, MaxArgBytes, want)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrArgs, err)
	}
	return m, nil
}
