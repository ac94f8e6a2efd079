package wire

import (
	"bytes"
	"encoding/pem"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

var (
	t0      = time.UnixMilli(1_790_000_000_123).UTC()
	fixedID = ID{0x01, 0x9a, 0x0b, 0x3c, 0x4d, 0x5e, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
)

// sampleBodies is one valid body of every type, with single-entry maps so
// that their encoding is deterministic (the seed corpus depends on it).
func sampleBodies() []Body {
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}})
	return []Body{
		&Telemetry{Metrics: map[string]float64{"cpu.temp_c": 51.5}, Labels: map[string]string{"board": "rpi4"}},
		&Event{Kind: "camera.offline", Severity: SeverityWarning, Message: "cam1 stopped sending", Attrs: map[string]string{"camera": "cam1"}},
		&Audit{Seq: 7, Prev: bytes.Repeat([]byte{1}, 32), Hash: bytes.Repeat([]byte{2}, 32), Actor: "admin", Action: "login", Target: "lan", Source: "192.168.1.20", Result: "ok"},
		&Command{Name: "reboot", Args: msgpack.RawMessage{0x81, 0xa5, 'd', 'e', 'l', 'a', 'y', 0x05}, Deadline: t0.Add(time.Minute)},
		&CommandResult{CommandID: fixedID, OK: true, Result: msgpack.RawMessage{0xc3}},
		&ConfigDesired{Version: 3, Config: []byte(`{"config_version":1,"log_level":"debug"}`)},
		&ConfigReported{Version: 3, Error: "field \"lan.https_addr\": wrong type"},
		&EnrolRequest{DeviceID: "op-abcdefghjkmnpqrs", ClaimCode: "ABCD-EFGH", CSR: []byte{0x30, 0x82, 0x01, 0x00}, Board: "rpi4", Version: "1.0.0"},
		&EnrolResponse{DeviceID: "op-abcdefghjkmnpqrs", CertPEM: p, CAPEM: p},
	}
}

// sampleEnvelope encodes b with a fixed id and time.
func sampleEnvelope(t testing.TB, b Body) []byte {
	t.Helper()
	raw, err := marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Encode(Envelope{V: Version, ID: fixedID, Time: t0, Type: b.Type(), Body: raw})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	for _, body := range sampleBodies() {
		t.Run(body.Type(), func(t *testing.T) {
			e, err := New(body.Type(), time.Now(), body)
			if err != nil {
				t.Fatal(err)
			}
			b, err := Encode(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b, DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Fatalf("envelope:\n got %+v\nwant %+v", got, e)
			}
			nb, ok := NewBody(got.Type)
			if !ok {
				t.Fatalf("NewBody(%q) unknown", got.Type)
			}
			if err := DecodeBody(got, nb, DefaultLimits()); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(nb, body) {
				t.Fatalf("body:\n got %+v\nwant %+v", nb, body)
			}
			t.Logf("%d bytes", len(b))
		})
	}
}

func TestID(t *testing.T) {
	now := time.UnixMilli(1_790_000_000_123)
	a, b := NewID(now), NewID(now.Add(time.Millisecond))
	if a == b || a.IsZero() || !a.Time().Equal(now) {
		t.Fatalf("a=%v b=%v time=%v", a, b, a.Time())
	}
	if a.String() >= b.String() || bytes.Compare(a[:], b[:]) >= 0 {
		t.Fatalf("ids do not sort by time: %v %v", a, b)
	}
	s := a.String()
	if len(s) != 32 || strings.ToLower(s) != s {
		t.Fatalf("String() = %q", s)
	}
	if p, err := ParseID(s); err != nil || p != a {
		t.Fatalf("ParseID(%q) = %v, %v", s, p, err)
	}
	for _, bad := range []string{"", s[:31], s + "0", strings.ToUpper(s), "g" + s[1:]} {
		if _, err := ParseID(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseID(%q) err = %v", bad, err)
		}
	}
	if NewID(time.Time{}).Time().UnixMilli() != 0 {
		t.Error("pre-1970 not clamped")
	}
	txt, _ := a.MarshalText()
	var u ID
	if err := u.UnmarshalText(txt); err != nil || u != a {
		t.Fatalf("text round trip: %v %v", u, err)
	}
	// In a body the id is bin 16, and only bin 16.
	m, err := msgpack.Marshal(a)
	if err != nil || len(m) != 18 || m[0] != 0xc4 || m[1] != 16 {
		t.Fatalf("msgpack id = %x, %v", m, err)
	}
	for _, bad := range [][]byte{{0xc4, 1, 1}, append([]byte{0xa0 | 16}, a[:]...)} {
		if err := msgpack.Unmarshal(bad, &u); !errors.Is(err, ErrMalformed) {
			t.Errorf("id from %x: err = %v", bad, err)
		}
	}
	if err := msgpack.Unmarshal([]byte{0xc0}, &u); err != nil || !u.IsZero() {
		t.Errorf("id from nil: %v %v", u, err)
	}
}

func TestNewAndEncodeRefuse(t *testing.T) {
	if _, err := New(TypeEvent, t0, &Telemetry{Metrics: map[string]float64{"a": 1}}); !errors.Is(err, ErrType) {
		t.Errorf("type mismatch: %v", err)
	}
	if _, err := New(TypeTelemetry, t0, &Telemetry{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("invalid body: %v", err)
	}
	if _, err := New("Bad", t0, nil); !errors.Is(err, ErrType) {
		t.Errorf("bad type: %v", err)
	}
	good := Envelope{V: Version, ID: fixedID, Time: t0, Type: "x", Body: msgpack.RawMessage{0xc0}}
	for _, c := range []struct {
		name string
		edit func(*Envelope)
		want error
	}{
		{"version", func(e *Envelope) { e.V = 2 }, ErrVersion},
		{"zero id", func(e *Envelope) { e.ID = ID{} }, ErrMalformed},
		{"zero time", func(e *Envelope) { e.Time = time.Time{} }, ErrMalformed},
		{"bad type", func(e *Envelope) { e.Type = "a/b" }, ErrType},
		{"long type", func(e *Envelope) { e.Type = strings.Repeat("a", 65) }, ErrType},
		{"reserved body", func(e *Envelope) { e.Body = msgpack.RawMessage{0xc1} }, ErrMalformed},
		{"two bodies", func(e *Envelope) { e.Body = msgpack.RawMessage{0xc0, 0xc0} }, ErrTrailing},
		{"huge body", func(e *Envelope) { e.Body = append([]byte{0xc6, 0, 4, 0, 0}, make([]byte, 256<<10)...) }, ErrTooLarge},
	} {
		e := good
		c.edit(&e)
		if _, err := Encode(e); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
	e := good
	e.Body = nil
	b, err := Encode(e)
	if err != nil || b[len(b)-1] != 0xc0 {
		t.Fatalf("empty body: %x %v", b, err)
	}
	e.Type = strings.Repeat("a", 64) // str8 type
	if b, err = Encode(e); err != nil {
		t.Fatal(err)
	}
	if got, err := Decode(b, Limits{}); err != nil || got.Type != e.Type {
		t.Fatalf("long type: %v %v", got.Type, err)
	}
}

// env assembles an envelope from raw parts.
func env(parts ...[]byte) []byte { return slices.Concat(parts...) }

var (
	idPart   = append([]byte{0xc4, 16}, fixedID[:]...)
	timePart = []byte{0xcf, 0, 0, 1, 0x9a, 0x0b, 0x3c, 0x4d, 0x5e}
	typePart = []byte{0xa5, 'e', 'v', 'e', 'n', 't'}
)

func TestDecodeRefuses(t *testing.T) {
	ok := env([]byte{0x95, 1}, idPart, timePart, typePart, []byte{0x80})
	if _, err := Decode(ok, DefaultLimits()); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	for _, c := range []struct {
		name string
		in   []byte
		want error
	}{
		{"map", []byte{0x80}, ErrMalformed},
		{"empty array", []byte{0x90}, ErrMalformed},
		{"four elements", env([]byte{0x94, 1}, idPart, timePart, typePart), ErrMalformed},
		{"six elements", env([]byte{0x96, 1}, idPart, timePart, typePart, []byte{0xc0, 0xc0}), ErrMalformed},
		{"version 2, other arity", []byte{0x92, 2, 0xc0}, ErrVersion},
		{"version 0", env([]byte{0x95, 0}, idPart, timePart, typePart, []byte{0xc0}), ErrVersion},
		{"version -1", env([]byte{0x95, 0xff}, idPart, timePart, typePart, []byte{0xc0}), ErrVersion},
		{"version uint16", env([]byte{0x95, 0xcd, 1, 0}, idPart, timePart, typePart, []byte{0xc0}), ErrVersion},
		{"version str", env([]byte{0x95, 0xa1, '1'}, idPart, timePart, typePart, []byte{0xc0}), ErrMalformed},
		{"id short", env([]byte{0x95, 1, 0xc4, 1, 1}, timePart, typePart, []byte{0xc0}), ErrMalformed},
		{"id str", env([]byte{0x95, 1, 0xb0}, fixedID[:], timePart, typePart, []byte{0xc0}), ErrMalformed},
		{"id zero", env([]byte{0x95, 1, 0xc4, 16}, make([]byte, 16), timePart, typePart, []byte{0xc0}), ErrMalformed},
		{"time negative", env([]byte{0x95, 1}, idPart, []byte{0xff}, typePart, []byte{0xc0}), ErrMalformed},
		{"time huge", env([]byte{0x95, 1}, idPart, []byte{0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0}, typePart, []byte{0xc0}), ErrMalformed},
		{"time float", env([]byte{0x95, 1}, idPart, []byte{0xcb, 0, 0, 0, 0, 0, 0, 0, 0}, typePart, []byte{0xc0}), ErrMalformed},
		{"time ext", env([]byte{0x95, 1}, idPart, []byte{0xd6, 0xff, 0, 0, 0, 1}, typePart, []byte{0xc0}), ErrMalformed},
		{"type bin", env([]byte{0x95, 1}, idPart, timePart, []byte{0xc4, 1, 'a'}, []byte{0xc0}), ErrMalformed},
		{"type upper", env([]byte{0x95, 1}, idPart, timePart, []byte{0xa1, 'A'}, []byte{0xc0}), ErrType},
		{"type empty", env([]byte{0x95, 1}, idPart, timePart, []byte{0xa0}, []byte{0xc0}), ErrType},
		{"type slash", env([]byte{0x95, 1}, idPart, timePart, []byte{0xa3, 'a', '/', 'b'}, []byte{0xc0}), ErrType},
		{"trailing", append(slices.Clone(ok), 0), ErrTrailing},
		{"truncated", ok[:len(ok)-1], ErrTruncated},
	} {
		_, err := Decode(c.in, DefaultLimits())
		var we *Error
		if !errors.Is(err, c.want) || !errors.As(err, &we) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestBodyValidate(t *testing.T) {
	long := strings.Repeat("x", MaxTextLen+1)
	many := map[string]string{}
	for i := range MaxEntries + 1 {
		many[strings.Repeat("k", i%100+1)+string(rune('a'+i/100))] = ""
	}
	for _, b := range []Body{
		Telemetry{},
		Telemetry{Metrics: map[string]float64{"": 1}},
		Telemetry{Metrics: map[string]float64{"a": 1}, Labels: many},
		Telemetry{Metrics: map[string]float64{"nan": nanValue()}},
		Telemetry{Metrics: map[string]float64{"a": 1}, Labels: map[string]string{"a": "\xff"}},
		Event{Kind: "Door", Severity: SeverityInfo},
		Event{Kind: "door", Severity: "debug"},
		Event{Kind: "door", Severity: SeverityInfo, Message: long},
		Audit{Seq: 0, Prev: make([]byte, 32), Hash: make([]byte, 32), Actor: "a", Action: "b", Result: "ok"},
		Audit{Seq: 1, Prev: make([]byte, 31), Hash: make([]byte, 32), Actor: "a", Action: "b", Result: "ok"},
		Audit{Seq: 1, Prev: make([]byte, 32), Hash: make([]byte, 32), Action: "b", Result: "ok"},
		Command{Name: "reboot"},
		Command{Name: "", Deadline: t0},
		Command{Name: "reboot", Deadline: t0, Args: msgpack.RawMessage{0xc1}},
		CommandResult{OK: true},
		CommandResult{CommandID: fixedID, OK: true, Error: "x"},
		CommandResult{CommandID: fixedID},
		CommandResult{CommandID: fixedID, OK: true, Result: msgpack.RawMessage{0xc0, 0xc0}},
		ConfigDesired{Config: []byte("{}")},
		ConfigDesired{Version: 1, Config: []byte("{")},
		ConfigReported{Version: 1},
		ConfigReported{Version: 1, Applied: true, Error: "x"},
		EnrolRequest{DeviceID: "op/1", ClaimCode: "c", CSR: []byte{1}, Board: "b", Version: "v"},
		EnrolRequest{DeviceID: "op-1", ClaimCode: "c", Board: "b", Version: "v"},
		EnrolRequest{DeviceID: "op-1", ClaimCode: "", CSR: []byte{1}, Board: "b", Version: "v"},
		EnrolResponse{DeviceID: "op-1"},
		EnrolResponse{DeviceID: "op-1", CertPEM: []byte("x"), CAPEM: []byte("y")},
		EnrolResponse{DeviceID: "op-1", Error: "no", CAPEM: []byte("y")},
		EnrolResponse{DeviceID: "+", Error: "no"},
	} {
		if err := b.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%T %+v: err = %v", b, b, err)
		}
	}
}

func nanValue() float64 { var z float64; return z / z }

func TestDecodeBody(t *testing.T) {
	// Unknown keys (a newer sender's fields) are ignored, whatever their shape.
	body := []byte("\x83\xa7metrics\x81\xa1a\x01\xa3new\x92\x01\x81\xa1x\xc0\xa6labels\x80")
	e := Envelope{V: Version, ID: fixedID, Time: t0, Type: TypeTelemetry, Body: body}
	var tm Telemetry
	if err := DecodeBody(e, &tm, DefaultLimits()); err != nil || tm.Metrics["a"] != 1 {
		t.Fatalf("unknown field: %+v %v", tm, err)
	}
	if err := DecodeBody(e, &Event{}, DefaultLimits()); !errors.Is(err, ErrType) {
		t.Errorf("mismatch: %v", err)
	}
	e.Body = []byte("\x81\xa7metrics\x80")
	if err := DecodeBody(e, &tm, DefaultLimits()); !errors.Is(err, ErrInvalid) {
		t.Errorf("no metrics: %v", err)
	}
	e.Body = []byte("\x81\xa7metrics\xa1x")
	if err := DecodeBody(e, &Telemetry{}, DefaultLimits()); !errors.Is(err, ErrMalformed) {
		t.Errorf("wrong field type: %v", err)
	}
	e.Body = []byte("\x81\xa7metrics\xdf\xff\xff\xff\xff")
	if err := DecodeBody(e, &Telemetry{}, DefaultLimits()); !errors.Is(err, ErrTruncated) {
		t.Errorf("hostile map: %v", err)
	}
	// A plain map decodes too: the typed bodies are a convenience.
	e.Body = []byte("\x81\xa1k\x01")
	var m map[string]int
	if err := DecodeBody(e, &m, DefaultLimits()); err != nil || m["k"] != 1 {
		t.Errorf("map: %v %v", m, err)
	}
}

// BenchmarkDecode shows what validation costs on a ~200-byte telemetry
// envelope: Decode (Validate + envelope) and DecodeBody beside
// msgpack.Unmarshal of the same bytes.
func BenchmarkDecode(b *testing.B) {
	tm := &Telemetry{Metrics: map[string]float64{}, Labels: map[string]string{"board": "rpi4", "site": "north-gate"}}
	for _, k := range []string{"cpu.temp_c", "cpu.load1", "mem.used_bytes", "net.rx_bytes", "cam1.fps", "uptime_s"} {
		tm.Metrics[k] = 123456.789
	}
	raw := sampleEnvelope(b, tm)
	b.Logf("envelope is %d bytes", len(raw))
	lim := DefaultLimits()
	b.Run("Validate", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if err := Validate(raw, lim); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Decode", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if _, err := Decode(raw, lim); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Decode+DecodeBody", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			e, err := Decode(raw, lim)
			if err != nil {
				b.Fatal(err)
			}
			var t Telemetry
			if err := DecodeBody(e, &t, lim); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("msgpack.Unmarshal/any", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			var v any
			if err := msgpack.Unmarshal(raw, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("msgpack.Unmarshal/struct", func(b *testing.B) {
		var v struct {
			_msgpack struct{} `msgpack:",as_array"`
			V        uint8
			ID       []byte
			T        int64
			Type     string
			Body     Telemetry
		}
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			v.Body = Telemetry{}
			if err := msgpack.Unmarshal(raw, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
