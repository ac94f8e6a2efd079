package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Sentinel errors; test with errors.Is. Validate and Decode return an
// *Error (with the byte offset) that unwraps to one of them; ErrInvalid
// comes from the bodies' Validate methods.
var (
	ErrTooLarge  = errors.New("too large")           // input over MaxBytes, or a str over MaxStrLen
	ErrTooDeep   = errors.New("nested too deep")     // containers nested beyond MaxDepth
	ErrTooMany   = errors.New("too many elements")   // containers' elements over MaxElements
	ErrTruncated = errors.New("truncated")           // input ends early, or a declared length/count exceeds what remains
	ErrTrailing  = errors.New("trailing bytes")      // bytes after the single top-level value
	ErrMalformed = errors.New("malformed")           // reserved byte, ext type, non-string map key, wrong envelope shape
	ErrVersion   = errors.New("unsupported version") // envelope version is not Version
	ErrType      = errors.New("bad message type")    // type name of the wrong format, or body/type mismatch
	ErrInvalid   = errors.New("invalid body")        // a body's Validate method refused it
)

// Error locates a failure in the input: Offset is the byte offset (from the
// start of the slice given to Validate or Decode) of the value at fault.
type Error struct {
	Offset int
	Err    error // one of the sentinels
	Detail string
}

func (e *Error) Error() string {
	return fmt.Sprintf("wire: offset %d: %v: %s", e.Offset, e.Err, e.Detail)
}

func (e *Error) Unwrap() error { return e.Err }

func errAt(off int, kind error, format string, args ...any) error {
	return &Error{Offset: off, Err: kind, Detail: fmt.Sprintf(format, args...)}
}

// Limits bound what Validate accepts. A field ≤ 0 takes its default from
// DefaultLimits, so Limits{} is the defaults and Limits{MaxBytes: 4096}
// tightens one bound only.
type Limits struct {
	MaxBytes    int // whole input; default 256 KiB
	MaxDepth    int // nesting of arrays and maps; a top-level array is depth 1; default 16
	MaxElements int // sum over all arrays of their items plus over all maps of their keys and values; default 65536
	MaxStrLen   int // bytes of one str value; bin is bounded only by MaxBytes; default 64 KiB
}

// DefaultLimits are sized for the link: the largest legitimate payload is a
// config.desired document, well below 256 KiB.
func DefaultLimits() Limits {
	return Limits{MaxBytes: 256 << 10, MaxDepth: 16, MaxElements: 65536, MaxStrLen: 64 << 10}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxBytes <= 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxElements <= 0 {
		l.MaxElements = d.MaxElements
	}
	if l.MaxStrLen <= 0 {
		l.MaxStrLen = d.MaxStrLen
	}
	return l
}

// frame is one open container: left counts the items still to come (a map
// of n entries starts at 2n; a key is due whenever left is even).
type frame struct {
	left  uint64
	isMap bool
}

// Validate checks that b is exactly one well-formed msgpack value within
// lim, without recursion and, for MaxDepth ≤ 16, without allocating.
// Beyond well-formedness it refuses ext types (the timestamp ext -1
// included: the protocol carries times as integer milliseconds), map keys
// that are not str, and any declared length or count that the remaining
// bytes cannot hold — counting what the enclosing open containers still
// need, one byte per pending item. Only bytes that pass are safe to hand to
// msgpack.Unmarshal; its allocations are then bounded by the input (worst
// seen: a map pre-sized from its count, ~40× the input, ~2.5 MB at the
// default MaxElements).
func Validate(b []byte, lim Limits) error {
	lim = lim.withDefaults()
	if len(b) > lim.MaxBytes {
		return errAt(0, ErrTooLarge, "input is %d bytes, limit %d", len(b), lim.MaxBytes)
	}
	var buf [16]frame
	stack := buf[:0]
	var owed uint64     // items still due in all open containers; each takes ≥ 1 byte
	var elements uint64 // running total against MaxElements
	pos := 0
	for {
		start := pos
		if pos >= len(b) {
			return errAt(pos, ErrTruncated, "input ends where a value is due")
		}
		c := b[pos]
		pos++
		if n := len(stack); n > 0 && stack[n-1].isMap && stack[n-1].left%2 == 0 && !isStr(c) {
			return errAt(start, ErrMalformed, "map key is not a str (0x%02x)", c)
		}
		var (
			count   uint64 // items of a container
			isMap   bool
			isCont  bool
			payload uint64 // bytes following the header
		)
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
			// fixint, nil, bool: header only
		case c <= 0x8f:
			count, isMap, isCont = uint64(c&0x0f), true, true
		case c <= 0x9f:
			count, isCont = uint64(c&0x0f), true
		case c <= 0xbf:
			payload = uint64(c & 0x1f)
		case c == 0xc1:
			return errAt(start, ErrMalformed, "reserved byte 0xc1")
		case c >= 0xc7 && c <= 0xc9, c >= 0xd4 && c <= 0xd8:
			return errAt(start, ErrMalformed, "ext type not allowed (0x%02x)", c)
		case c == 0xca:
			payload = 4
		case c == 0xcb:
			payload = 8
		case c >= 0xcc && c <= 0xd3:
			payload = 1 << ((c - 0xcc) & 3) // cc..cf uint8..64, d0..d3 int8..64
		default: // c4..c6 bin, d9..db str, dc..dd array, de..df map
			w := 4 // width of the length/count field
			switch c {
			case 0xc4, 0xd9:
				w = 1
			case 0xc5, 0xda, 0xdc, 0xde:
				w = 2
			}
			if len(b)-pos < w {
				return errAt(start, ErrTruncated, "input ends inside a length header")
			}
			var n uint64
			switch w {
			case 1:
				n = uint64(b[pos])
			case 2:
				n = uint64(binary.BigEndian.Uint16(b[pos:]))
			default:
				n = uint64(binary.BigEndian.Uint32(b[pos:]))
			}
			pos += w
			switch c {
			case 0xdc, 0xdd:
				count, isCont = n, true
			case 0xde, 0xdf:
				count, isMap, isCont = n, true, true
			default:
				payload = n
			}
		}
		if isStr(c) && payload > uint64(lim.MaxStrLen) {
			return errAt(start, ErrTooLarge, "str of %d bytes, limit %d", payload, lim.MaxStrLen)
		}
		if payload > uint64(len(b)-pos) {
			return errAt(start, ErrTruncated, "value needs %d more bytes, %d remain", payload, len(b)-pos)
		}
		pos += int(payload)
		if n := len(stack); n > 0 {
			stack[n-1].left--
			owed--
		}
		if isCont {
			if len(stack)+1 > lim.MaxDepth {
				return errAt(start, ErrTooDeep, "depth %d, limit %d", len(stack)+1, lim.MaxDepth)
			}
			items := count
			if isMap {
				items *= 2
			}
			if owed+items > uint64(len(b)-pos) {
				return errAt(start, ErrTruncated, "container of %d items needs at least %d more bytes, %d remain", count, owed+items, len(b)-pos)
			}
			elements += items
			if elements > uint64(lim.MaxElements) {
				return errAt(start, ErrTooMany, "%d elements, limit %d", elements, lim.MaxElements)
			}
			owed += items
			stack = append(stack, frame{left: items, isMap: isMap})
		}
		for len(stack) > 0 && stack[len(stack)-1].left == 0 {
			stack = stack[:len(stack)-1]
		}
		if len(stack) == 0 {
			break
		}
	}
	if pos != len(b) {
		return errAt(pos, ErrTrailing, "%d bytes after the value", len(b)-pos)
	}
	return nil
}

func isStr(c byte) bool { return c >= 0xa0 && c <= 0xbf || c >= 0xd9 && c <= 0xdb }
