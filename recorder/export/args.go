// Package export uploads a time range of one camera's recording to an
// HTTPS URL on a cloud command. This file parses the command's arguments.
package export

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/outpost-gw/outpost/internal/cmdargs"
	"github.com/outpost-gw/outpost/recorder/segment"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Limits of a request.
const (
	MaxDuration = time.Hour // longest clip one command may ask for
	MaxArgBytes = 8 << 10   // the whole args value
	maxURLLen   = 4096
)

// ErrArgs reports export arguments that do not parse or are out of bounds.
var ErrArgs = errors.New("export: bad arguments")

// Request is one export as the fleet asks for it.
type Request struct {
	ID       string        // export id, ^[A-Za-z0-9_-]{1,64}$
	Camera   string        // ^[a-z0-9][a-z0-9_-]{0,63}$
	Start    time.Time     // RFC 3339
	Duration time.Duration // whole seconds, 1 s .. MaxDuration
	URL      string        // https only, no userinfo
}

// ParseArgs parses the "export" command's args strictly: a msgpack map
// with exactly the keys id, camera, start (RFC 3339 str), duration_s
// (int) and url (str), each once. An unknown key is refused rather than
// ignored: a command's arguments are instructions, and dropping one (a
// future "max_bytes", say) would do something other than the fleet meant.
func ParseArgs(b []byte) (Request, error) {
	var r Request
	if len(b) > MaxArgBytes {
		return r, fmt.Errorf("%w: %d bytes, at most %d", ErrArgs, len(b), MaxArgBytes)
	}
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	n, err := dec.DecodeMapLen()
	if err != nil || n < 0 {
		return r, fmt.Errorf("%w: not a map", ErrArgs)
	}
	if n > 5 {
		return r, fmt.Errorf("%w: %d keys, want 5", ErrArgs, n)
	}
	seen := map[string]bool{}
	var start string
	var dur int64
	for range n {
		k, err := cmdargs.Str(dec, 16)
		if err != nil {
			return r, fmt.Errorf("%w: key: %v", ErrArgs, err)
		}
		if seen[k] {
			return r, fmt.Errorf("%w: key %q twice", ErrArgs, k)
		}
		seen[k] = true
		switch k {
		case "id":
			r.ID, err = cmdargs.Str(dec, 64)
		case "camera":
			r.Camera, err = cmdargs.Str(dec, 64)
		case "start":
			start, err = cmdargs.Str(dec, 64)
		case "url":
			r.URL, err = cmdargs.Str(dec, maxURLLen)
		case "duration_s":
			var c byte
			if c, err = dec.PeekCode(); err == nil && !msgpcode.IsFixedNum(c) && (c < msgpcode.Uint8 || c > msgpcode.Int64) {
				err = errors.New("not an integer")
			} else if err == nil {
				dur, err = dec.DecodeInt64()
			}
		default:
			return r, fmt.Errorf("%w: unknown key %q", ErrArgs, k)
		}
		if err != nil {
			return r, fmt.Errorf("%w: %s: %v", ErrArgs, k, err)
		}
	}
	if _, err := dec.PeekCode(); err == nil {
		return r, fmt.Errorf("%w: trailing bytes", ErrArgs)
	}
	for _, k := range []string{"id", "camera", "start", "duration_s", "url"} {
		if !seen[k] {
			return r, fmt.Errorf("%w: %s missing", ErrArgs, k)
		}
	}
	if !cmdargs.ValidID(r.ID) {
		return r, fmt.Errorf("%w: id %q", ErrArgs, r.ID)
	}
	if !segment.ValidCamera(r.Camera) {
		return r, fmt.Errorf("%w: camera %q", ErrArgs, r.Camera)
	}
	if r.Start, err = time.Parse(time.RFC3339, start); err != nil {
		return r, fmt.Errorf("%w: start: %v", ErrArgs, err)
	}
	if dur < 1 || dur > int64(MaxDuration/time.Second) {
		return r, fmt.Errorf("%w: duration_s %d, want 1..%d", ErrArgs, dur, int64(MaxDuration/time.Second))
	}
	r.Duration = time.Duration(dur) * time.Second
	if err := CheckURL(r.URL); err != nil {
		return r, err
	}
	return r, nil
}

// ErrURL reports an upload URL that is not https, or is malformed.
var ErrURL = errors.New("export: upload URL refused")

// CheckURL accepts only absolute https URLs with a host and without
// user info (credentials would end up in logs).
func CheckURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", ErrURL, err)
	case u.Scheme != "https":
		return fmt.Errorf("%w: scheme %q, only https is allowed", ErrURL, u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%w: no host", ErrURL)
	case u.User != nil:
		return fmt.Errorf("%w: user info in the URL", ErrURL)
	}
	return nil
}

// SnapshotRequest is one "snapshot" command: the camera's latest key
// frame, as a short fMP4 of one GOP, uploaded to URL.
type SnapshotRequest struct {
	ID     string // ^[A-Za-z0-9_-]{1,64}$
	Camera string
	URL    string // https only, no userinfo
}

// ParseSnapshotArgs parses the "snapshot" command's args as strictly as
// ParseArgs: a msgpack map of exactly id, camera and url (str), each once.
func ParseSnapshotArgs(b []byte) (SnapshotRequest, error) {
	m, err := strictStrings(b, map[string]int{"id": 64, "camera": 64, "url": maxURLLen})
	if err != nil {
		return SnapshotRequest{}, err
	}
	r := SnapshotRequest{ID: m["id"], Camera: m["camera"], URL: m["url"]}
	if !segment.ValidCamera(r.Camera) {
		return r, fmt.Errorf("%w: camera %q", ErrArgs, r.Camera)
	}
	return r, CheckURL(r.URL)
}

// ParseCancelArgs parses the "export.cancel" command's args: a msgpack map
// of exactly id (str), the export to stop.
func ParseCancelArgs(b []byte) (id string, err error) {
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
