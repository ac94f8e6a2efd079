package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Document types, in the signed object's "type" member and in the signing
// input, so a signature over one kind never verifies as the other.
const (
	kindKeys     = "keys"
	kindManifest = "manifest"
)

// maxDepth bounds nesting: envelope, signed, artifacts, artifact.
const maxDepth = 6

type envelope struct {
	Signed     json.RawMessage `json:"signed"`
	Signatures []signature     `json:"signatures"`
}

type signature struct {
	KeyID string `json:"keyid"`
	Sig   []byte `json:"sig"`
}

type keysBody struct {
	Type string `json:"type"`
	KeysDocument
}

type manifestBody struct {
	Type string `json:"type"`
	Manifest
}

func (b *keysBody) docType() string     { return b.Type }
func (b *manifestBody) docType() string { return b.Type }

// parseEnvelope splits a document into the exact signed bytes and the
// signatures, without looking inside the signed object beyond its syntax.
func parseEnvelope(b []byte) (envelope, error) {
	var env envelope
	if err := decodeStrict(b, &env); err != nil {
		return envelope{}, err
	}
	if len(env.Signed) == 0 || env.Signed[0] != '{' {
		return envelope{}, fmt.Errorf("%w: no signed object", ErrMalformed)
	}
	if len(env.Signatures) > MaxSignatures {
		return envelope{}, fmt.Errorf("%w: %d signatures, limit %d", ErrMalformed, len(env.Signatures), MaxSignatures)
	}
	return env, nil
}

// decodeBody decodes a signed object and checks it is of the expected kind.
func decodeBody(raw []byte, kind string, v interface{ docType() string }) error {
	if err := decodeStrict(raw, v); err != nil {
		return err
	}
	if t := v.docType(); t != kind {
		return fmt.Errorf("%w: a %q document where a %q document belongs", ErrMalformed, t, kind)
	}
	return nil
}

// decodeStrict decodes one JSON object into v, refusing oversized input,
// invalid UTF-8, duplicate or non-lowercase member names (encoding/json would
// take the last duplicate and match names case-insensitively), unknown
// members, deep nesting and trailing data.
func decodeStrict(b []byte, v any) error {
	if len(b) > MaxSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(b), MaxSize)
	}
	if !utf8.Valid(b) {
		return fmt.Errorf("%w: not UTF-8", ErrMalformed)
	}
	if err := checkSyntax(b); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// checkSyntax walks the tokens of b: exactly one top-level object, nesting
// at most maxDepth, member names [a-z0-9_]{1,32} and unique per object.
func checkSyntax(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type frame struct {
		object, wantKey bool
		seen            map[string]bool
	}
	var stack []frame
	done := false
	for {
		t, err := dec.Token()
		if err == io.EOF && done {
			return nil
		}
		if err == io.EOF {
			return errors.New("truncated")
		}
		if err != nil {
			return err
		}
		if done {
			return errors.New("data after the top-level object")
		}
		n := len(stack)
		if d, ok := t.(json.Delim); n == 0 && (!ok || d != '{') {
			return errors.New("top level is not an object")
		}
		switch t := t.(type) {
		case json.Delim:
			if t == '{' || t == '[' {
				if n == maxDepth {
					return errors.New("nested too deep")
				}
				stack = append(stack, frame{object: t == '{', wantKey: true})
				continue
			}
			stack = stack[:n-1]
			done = n == 1
		case string:
			if f := &stack[n-1]; f.object && f.wantKey {
				if !validKey(t) {
					return fmt.Errorf("member name %q", t)
				}
				if f.seen[t] {
					return fmt.Errorf("member %q twice", t)
				}
				if f.seen == nil {
					f.seen = make(map[string]bool)
				}
				f.seen[t] = true
				f.wantKey = false
				continue
			}
		}
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantKey = true // a member's value is complete
		}
	}
}

func validKey(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
