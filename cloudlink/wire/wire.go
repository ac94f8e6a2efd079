// Package wire is the cloud link's payload format. Every MQTT payload between
// a box and its fleet is one msgpack envelope, the array
// [v, id, t_ms, type, body]; the body is a msgpack map whose schema the type
// names. Bytes from the network go through Validate — an iterative walk with
// size, depth and count limits — before msgpack ever sees them, because
// msgpack v5.4.1 trusts declared lengths (5 hostile bytes are a fatal
// out-of-memory). The format and its versioning rules are in docs/protocol.md.
package wire

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"reflect"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Version is the envelope version this build speaks. A receiver refuses any
// other version (ErrVersion) rather than guess; adding body fields or message
// types never changes it.
const Version = 1

// maxMillis bounds times on the wire to what an ID's 48-bit prefix holds
// (until the year 10889).
const maxMillis = 1<<48 - 1

// Envelope is one message. On the wire it is the msgpack array
// [V (uint), ID (bin 16), Time (int, unix ms), Type (str), Body (any value)].
type Envelope struct {
	V    uint8     // envelope version; New sets Version, Encode and Decode accept nothing else
	ID   ID        // unique per message; receivers drop duplicates by it
	Time time.Time // when the sender made the message; millisecond precision, UTC after Decode
	Type string    // ^[a-z][a-z0-9_.]{0,63}$; names the body schema (TypeTelemetry, ...)
	// Body is one msgpack value (normally a map). After Decode it aliases
	// the decoded input: copy it if that buffer is reused.
	Body msgpack.RawMessage
}

// ID identifies a message: 6 bytes big-endian unix milliseconds, then 10
// random bytes, so IDs sort by creation time to the millisecond (not within
// one). Its text form is 32 lowercase hex digits; on the wire it is bin 16.
type ID [16]byte

// NewID makes an ID stamped with now (clamped to 1970..10889) and 10 bytes
// from crypto/rand.
func NewID(now time.Time) ID {
	var id ID
	ms := min(max(now.UnixMilli(), 0), maxMillis)
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(ms))
	copy(id[:6], t[2:])
	rand.Read(id[6:]) // never fails (crypto/rand crashes the program instead)
	return id
}

// ParseID parses the 32 lowercase hex digits String returns.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return ID{}, fmt.Errorf("wire: id %q: want %d hex digits: %w", s, 2*len(id), ErrMalformed)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ID{}, fmt.Errorf("wire: id %q: not lowercase hex: %w", s, ErrMalformed)
		}
	}
	hex.Decode(id[:], []byte(s))
	return id, nil
}

// String is the id as 32 lowercase hex digits (sorts like the id).
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Time is the millisecond stamp in the id's first 6 bytes.
func (id ID) Time() time.Time {
	var t [8]byte
	copy(t[2:], id[:6])
	return time.UnixMilli(int64(binary.BigEndian.Uint64(t[:]))).UTC()
}

// IsZero reports whether id is the zero ID, which no valid message carries.
func (id ID) IsZero() bool { return id == ID{} }

// MarshalText is String, for JSON and logs.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText is ParseID.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	*id = v
	return err
}

// EncodeMsgpack writes the id as bin 16 (it implements msgpack.CustomEncoder,
// which takes precedence over MarshalText).
func (id ID) EncodeMsgpack(e *msgpack.Encoder) error { return e.EncodeBytes(id[:]) }

// DecodeMsgpack reads exactly a bin 16 (msgpack's own [16]byte decoding
// would accept a shorter bin silently); msgpack turns nil into the zero ID
// without calling it.
func (id *ID) DecodeMsgpack(d *msgpack.Decoder) error {
	c, err := d.PeekCode()
	if err != nil {
		return err
	}
	if c != 0xc4 {
		return fmt.Errorf("wire: id is not a bin 8 (0x%02x): %w", c, ErrMalformed)
	}
	b, err := d.DecodeBytes()
	if err != nil {
		return err
	}
	if len(b) != len(id) {
		return fmt.Errorf("wire: id of %d bytes, want %d: %w", len(b), len(id), ErrMalformed)
	}
	copy(id[:], b)
	return nil
}

// New makes a version-1 envelope with a fresh ID stamped now and body
// marshalled with msgpack (compact integers). A Body is checked first: its
// Type must be typ and its Validate must pass. Time is now truncated to the
// millisecond, in UTC, so New's result equals what Decode will return.
func New(typ string, now time.Time, body any) (Envelope, error) {
	if err := checkName(typ); err != nil {
		return Envelope{}, fmt.Errorf("wire: new: %w", err)
	}
	if b, ok := body.(Body); ok {
		if b.Type() != typ {
			return Envelope{}, fmt.Errorf("wire: new %s: body is a %s: %w", typ, b.Type(), ErrType)
		}
		if err := b.Validate(); err != nil {
			return Envelope{}, fmt.Errorf("wire: new %s: %w", typ, err)
		}
	}
	raw, err := marshal(body)
	if err != nil {
		return Envelope{}, fmt.Errorf("wire: new %s: %w", typ, err)
	}
	return Envelope{V: Version, ID: NewID(now), Time: time.UnixMilli(now.UnixMilli()).UTC(), Type: typ, Body: raw}, nil
}

func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Encode writes e as the envelope array. An empty Body is sent as msgpack
// nil. The result is guaranteed to pass Decode with DefaultLimits: Encode
// refuses (with the same sentinels) a zero ID, a time outside 1970..10889,
// a bad type name, a version other than Version, and a body that is not
// exactly one acceptable msgpack value or makes the whole exceed the limits.
func Encode(e Envelope) ([]byte, error) {
	if e.V != Version {
		return nil, fmt.Errorf("wire: encode: version %d, this build speaks %d: %w", e.V, Version, ErrVersion)
	}
	if e.ID.IsZero() {
		return nil, fmt.Errorf("wire: encode: zero id: %w", ErrMalformed)
	}
	ms := e.Time.UnixMilli()
	if e.Time.IsZero() || ms < 0 || ms > maxMillis {
		return nil, fmt.Errorf("wire: encode: time %v out of range: %w", e.Time, ErrMalformed)
	}
	if err := checkName(e.Type); err != nil {
		return nil, fmt.Errorf("wire: encode: %w", err)
	}
	body := e.Body
	if len(body) == 0 {
		body = []byte{0xc0}
	}
	out := make([]byte, 0, 2+2+len(e.ID)+9+2+len(e.Type)+len(body))
	out = append(out, 0x95, Version, 0xc4, byte(len(e.ID)))
	out = append(out, e.ID[:]...)
	out = appendUint(out, uint64(ms))
	if len(e.Type) < 32 {
		out = append(out, 0xa0|byte(len(e.Type)))
	} else {
		out = append(out, 0xd9, byte(len(e.Type)))
	}
	out = append(out, e.Type...)
	out = append(out, body...)
	if err := Validate(out, DefaultLimits()); err != nil {
		return nil, fmt.Errorf("wire: encode %s: %w", e.Type, err)
	}
	return out, nil
}

func appendUint(b []byte, v uint64) []byte {
	switch {
	case v < 0x80:
		return append(b, byte(v))
	case v <= math.MaxUint8:
		return append(b, 0xcc, byte(v))
	case v <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

// Decode validates b within lim and decodes the envelope strictly. The
// version is read first, whatever the arity: anything but Version is
// ErrVersion, so a later format can change everything after it. Then there
// must be exactly 5 elements: id a bin of 16 non-zero bytes, t_ms an integer
// in 0..2^48-1, type a str of the name format, body any value. Unknown but
// well-formed types pass: the dispatcher decides what it ignores.
func Decode(b []byte, lim Limits) (Envelope, error) {
	if err := Validate(b, lim); err != nil {
		return Envelope{}, err
	}
	r := reader{b: b}
	n, ok := r.arrayLen()
	if !ok || n == 0 {
		return Envelope{}, errAt(0, ErrMalformed, "envelope is not a non-empty array")
	}
	off := r.off
	v, ok := r.integer()
	if !ok {
		return Envelope{}, errAt(off, ErrMalformed, "version is not an integer")
	}
	if v != Version {
		return Envelope{}, errAt(off, ErrVersion, "version %d, this build speaks %d", v, Version)
	}
	if n != 5 {
		return Envelope{}, errAt(0, ErrMalformed, "envelope has %d elements, want 5", n)
	}
	var e Envelope
	e.V = Version
	off = r.off
	id, ok := r.bin()
	if !ok || len(id) != len(e.ID) {
		return Envelope{}, errAt(off, ErrMalformed, "id is not a bin of %d bytes", len(e.ID))
	}
	if copy(e.ID[:], id); e.ID.IsZero() {
		return Envelope{}, errAt(off, ErrMalformed, "zero id")
	}
	off = r.off
	ms, ok := r.integer()
	if !ok || ms < 0 || ms > maxMillis {
		return Envelope{}, errAt(off, ErrMalformed, "time is not an integer in 0..2^48-1 ms")
	}
	e.Time = time.UnixMilli(ms).UTC()
	off = r.off
	typ, ok := r.str()
	if !ok {
		return Envelope{}, errAt(off, ErrMalformed, "type is not a str")
	}
	if e.Type = string(typ); checkName(e.Type) != nil {
		return Envelope{}, errAt(off, ErrType, "type %q: want ^[a-z][a-z0-9_.]{0,63}$", typ)
	}
	e.Body = msgpack.RawMessage(b[r.off:len(b):len(b)]) // the rest: validated as exactly the 5th element
	return e, nil
}

// DecodeBody unmarshals e.Body into v (a pointer, reset to its zero value
// first), after validating the body bytes again within lim (cheap: they are
// already validated). Unknown map keys are ignored, so a sender may add
// fields without a new version. If v is a Body its Type must be e.Type, and
// its Validate runs after decoding.
func DecodeBody(e Envelope, v any, lim Limits) error {
	if err := Validate(e.Body, lim); err != nil {
		return fmt.Errorf("wire: %s body: %w", e.Type, err)
	}
	body, isBody := v.(Body)
	if isBody && body.Type() != e.Type {
		return fmt.Errorf("wire: %s body decoded as %s: %w", e.Type, body.Type(), ErrType)
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && !rv.IsNil() {
		rv.Elem().SetZero() // msgpack merges into what is there
	}
	if err := msgpack.Unmarshal(e.Body, v); err != nil {
		return fmt.Errorf("wire: %s body: %w: %w", e.Type, ErrMalformed, err)
	}
	if isBody {
		if err := body.Validate(); err != nil {
			return fmt.Errorf("wire: %s body: %w", e.Type, err)
		}
	}
	return nil
}

// checkName checks the format of type names and event kinds:
// ^[a-z][a-z0-9_.]{0,63}$.
func checkName(s string) error {
	if len(s) == 0 || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return fmt.Errorf("name %q: want ^[a-z][a-z0-9_.]{0,63}$: %w", s, ErrType)
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.') {
			return fmt.Errorf("name %q: want ^[a-z][a-z0-9_.]{0,63}$: %w", s, ErrType)
		}
	}
	return nil
}

// reader reads scalars from validated bytes; every method reports false on a
// value of another kind (or, defensively, on short input).
type reader struct {
	b   []byte
	off int
}

func (r *reader) take(n int) ([]byte, bool) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, false
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p, true
}

// be reads an n-byte big-endian unsigned number.
func (r *reader) be(n int) (uint64, bool) {
	p, ok := r.take(n)
	var v uint64
	for _, c := range p {
		v = v<<8 | uint64(c)
	}
	return v, ok
}

func (r *reader) code() (byte, bool) {
	p, ok := r.take(1)
	if !ok {
		return 0, false
	}
	return p[0], true
}

func (r *reader) arrayLen() (int, bool) {
	c, ok := r.code()
	switch {
	case !ok:
		return 0, false
	case c >= 0x90 && c <= 0x9f:
		return int(c & 0x0f), true
	case c == 0xdc, c == 0xdd:
		n, ok := r.be(2 << (c - 0xdc))
		return int(n), ok
	}
	return 0, false
}

// integer reads any msgpack integer that fits an int64.
func (r *reader) integer() (int64, bool) {
	c, ok := r.code()
	switch {
	case !ok:
		return 0, false
	case c <= 0x7f:
		return int64(c), true
	case c >= 0xe0:
		return int64(int8(c)), true
	case c >= 0xcc && c <= 0xcf:
		v, ok := r.be(1 << (c - 0xcc))
		return int64(v), ok && v <= math.MaxInt64
	case c >= 0xd0 && c <= 0xd3:
		n := 1 << (c - 0xd0)
		v, ok := r.be(n)
		shift := 64 - 8*n
		return int64(v<<shift) >> shift, ok // sign-extend
	}
	return 0, false
}

func (r *reader) bin() ([]byte, bool) { return r.blob(0xc4) }
func (r *reader) str() ([]byte, bool) { return r.blob(0xd9) }

// blob reads a bin (first = 0xc4) or a str (first = 0xd9, plus fixstr).
func (r *reader) blob(first byte) ([]byte, bool) {
	c, ok := r.code()
	if !ok {
		return nil, false
	}
	if first == 0xd9 && c >= 0xa0 && c <= 0xbf {
		return r.take(int(c & 0x1f))
	}
	if c < first || c > first+2 {
		return nil, false
	}
	n, ok := r.be(1 << (c - first))
	if !ok || n > uint64(len(r.b)) {
		return nil, false
	}
	return r.take(int(n))
}
