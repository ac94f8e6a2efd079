// Package cmdargs reads the msgpack arguments of fleet commands strictly:
// exact keys, each once, strings only, bounded lengths, nothing trailing.
// A command's arguments are instructions; a key dropped or guessed would
// do something other than the fleet meant. Errors carry no sentinel: each
// command's parser wraps them in its own.
package cmdargs

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// MaxKeyLen bounds a key.
const MaxKeyLen = 16

// Strings reads a msgpack map of at most maxBytes whose keys are exactly
// those of want, each once, each a str of at most want[key] bytes, with
// nothing after it. An "id" must be a ValidID.
func Strings(b []byte, maxBytes int, want map[string]int) (map[string]string, error) {
	if len(b) > maxBytes {
		return nil, fmt.Errorf("%d bytes, at most %d", len(b), maxBytes)
	}
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	n, err := dec.DecodeMapLen()
	if err != nil || n < 0 {
		return nil, errors.New("not a map")
	}
	if n != len(want) {
		return nil, fmt.Errorf("%d keys, want %d", n, len(want))
	}
	out := map[string]string{}
	for range n {
		k, err := Str(dec, MaxKeyLen)
		if err != nil {
			return nil, fmt.Errorf("key: %v", err)
		}
		max, ok := want[k]
		if !ok {
			return nil, fmt.Errorf("unknown key %q", k)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("key %q twice", k)
		}
		if out[k], err = Str(dec, max); err != nil {
			return nil, fmt.Errorf("%s: %v", k, err)
		}
	}
	if _, err := dec.PeekCode(); err == nil {
		return nil, errors.New("trailing bytes")
	}
	if _, ok := want["id"]; ok && !ValidID(out["id"]) {
		return nil, fmt.Errorf("id %q", out["id"])
	}
	return out, nil
}

// Str reads a msgpack str (not bin) of at most max bytes.
func Str(dec *msgpack.Decoder, max int) (string, error) {
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

// ValidID reports a command's job or hold id: 1..64 of A-Z a-z 0-9 - _.
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
