package wire

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// Property: whatever Validate accepts, msgpack.Unmarshal into interface{}
// decodes without panicking or blowing up; tighter limits never accept what
// the defaults refuse.
func FuzzValidate(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		err := Validate(data, DefaultLimits())
		tight := Validate(data, Limits{MaxBytes: 1024, MaxDepth: 3, MaxElements: 8, MaxStrLen: 4})
		if err != nil {
			var we *Error
			if !errors.As(err, &we) || we.Offset < 0 || we.Offset > len(data) {
				t.Fatalf("error %v is not an *Error within the input", err)
			}
			if tight == nil {
				t.Fatalf("tight limits accept what the defaults refuse: %v", err)
			}
			return
		}
		var v any
		if err := msgpack.Unmarshal(data, &v); err != nil {
			t.Fatalf("validated, but msgpack.Unmarshal: %v", err)
		}
	})
}

// Property: Decode never panics, and an accepted envelope re-encodes (no
// larger) and decodes to the same value.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data, DefaultLimits())
		if err != nil {
			return
		}
		b, err := Encode(e)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", e, err)
		}
		if len(b) > len(data) {
			t.Fatalf("re-encoded to %d bytes from %d", len(b), len(data))
		}
		e2, err := Decode(b, DefaultLimits())
		if err != nil {
			t.Fatalf("re-encoded envelope does not decode: %v", err)
		}
		if !reflect.DeepEqual(e, e2) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", e2, e)
		}
	})
}

var fuzzTypes = []string{TypeTelemetry, TypeEvent, TypeAudit, TypeCommand, TypeCommandResult,
	TypeConfigDesired, TypeConfigReported, TypeEnrolRequest, TypeEnrolResponse}

// Property: DecodeBody never panics, and a body it accepts goes through New
// and DecodeBody again to the same value (empty and absent maps/slices
// being the same thing).
func FuzzDecodeBody(f *testing.F) {
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		typ := fuzzTypes[int(kind)%len(fuzzTypes)]
		b1, _ := NewBody(typ)
		if DecodeBody(Envelope{V: Version, ID: fixedID, Time: t0, Type: typ, Body: data}, b1, DefaultLimits()) != nil {
			return
		}
		e, err := New(typ, t0, b1)
		if err != nil {
			t.Fatalf("accepted %+v, New: %v", b1, err)
		}
		b2, _ := NewBody(typ)
		if err := DecodeBody(e, b2, DefaultLimits()); err != nil {
			t.Fatalf("re-encoded %+v: %v", b1, err)
		}
		normalize(b1)
		normalize(b2)
		if !reflect.DeepEqual(b1, b2) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", b2, b1)
		}
	})
}

// normalize sets empty maps and slices of a *struct to nil.
func normalize(v any) {
	rv := reflect.ValueOf(v).Elem()
	for i := range rv.NumField() {
		if f := rv.Field(i); (f.Kind() == reflect.Map || f.Kind() == reflect.Slice) && f.Len() == 0 {
			f.SetZero()
		}
	}
}

// seedCorpus is the committed corpus under testdata/fuzz: target → file
// name → inputs. TestFuzzSeedCorpus checks the files match it;
// WIRE_WRITE_SEEDS=1 go test -run TestFuzzSeedCorpus rewrites them.
func seedCorpus(t testing.TB) map[string]map[string][]any {
	killers := map[string][]byte{
		"killer_dd_ffffffff":    hx("dd ffffffff"),
		"killer_df_ffffffff":    hx("df ffffffff"),
		"killer_dc_ffff":        hx("dc ffff"),
		"killer_64M_array":      append(hx("dd 04000000"), make([]byte, 64)...),
		"killer_nested_1000":    bytes.Repeat([]byte{0x91}, 1000),
		"killer_nested_maps":    bytes.Repeat(hx("81 a0"), 20),
		"reserved_c1":           hx("92 01 c1"),
		"timestamp_ext":         hx("d6 ff 00000001"),
		"truncated_str":         hx("a5 6162"),
		"truncated_bin":         hx("c4 05 01"),
		"trailing":              hx("91 01 ff"),
		"int_map_key":           hx("81 01 02"),
		"all_kinds":             hx("dc 0010 c0 c2 c3 7f e0 cc ff d3 8000000000000000 ca 3f800000 cb 3ff0000000000000 a1 61 c4 01 00 92 90 80 81 a1 6b c0 dc 0001 c0 de 0001 a0 c0 db 00000000"),
		"envelope_v2_arity_3":   hx("93 02 c0 c0"),
		"envelope_arity_4":      env([]byte{0x94, 1}, idPart, timePart, typePart),
		"envelope_bad_type":     env([]byte{0x95, 1}, idPart, timePart, []byte{0xa3, 'a', '/', 'b'}, []byte{0xc0}),
		"envelope_zero_id":      env([]byte{0x95, 1, 0xc4, 16}, make([]byte, 16), timePart, typePart, []byte{0xc0}),
		"envelope_wide_headers": env([]byte{0xdc, 0, 5, 0xcc, 1}, idPart, timePart, []byte{0xd9, 5, 'e', 'v', 'e', 'n', 't'}, []byte{0xc0}),
	}
	c := map[string]map[string][]any{"FuzzValidate": {}, "FuzzDecode": {}, "FuzzDecodeBody": {}}
	for name, b := range killers {
		c["FuzzValidate"][name] = []any{b}
		c["FuzzDecode"][name] = []any{b}
	}
	for i, b := range sampleBodies() {
		raw, err := marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		c["FuzzValidate"]["envelope_"+b.Type()] = []any{sampleEnvelope(t, b)}
		c["FuzzDecode"]["envelope_"+b.Type()] = []any{sampleEnvelope(t, b)}
		c["FuzzDecodeBody"][b.Type()] = []any{uint8(i), raw}
	}
	c["FuzzDecodeBody"]["telemetry_hostile_map"] = []any{uint8(0), hx("81 a7 6d657472696373 df ffffffff")}
	c["FuzzDecodeBody"]["telemetry_unknown_field"] = []any{uint8(0), []byte("\x82\xa7metrics\x81\xa1a\x01\xa3new\x92\x01\x81\xa1x\xc0")}
	c["FuzzDecodeBody"]["telemetry_as_array"] = []any{uint8(0), []byte("\x92\x81\xa1a\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00\x80")}
	c["FuzzDecodeBody"]["command_nested_args"] = []any{uint8(3), []byte("\x82\xa4name\xa1x\xa4args" + string(bytes.Repeat([]byte{0x91}, 20)) + "\xc0")}
	c["FuzzDecodeBody"]["command_result_short_id"] = []any{uint8(4), []byte("\x82\xaacommand_id\xc4\x01\x01\xa2ok\xc3")}
	return c
}

func TestFuzzSeedCorpus(t *testing.T) {
	write := os.Getenv("WIRE_WRITE_SEEDS") != ""
	for target, files := range seedCorpus(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		if write {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, vals := range files {
			var buf bytes.Buffer
			buf.WriteString("go test fuzz v1\n")
			for _, v := range vals {
				switch v := v.(type) {
				case []byte:
					fmt.Fprintf(&buf, "[]byte(%s)\n", strconv.Quote(string(v)))
				case uint8:
					fmt.Fprintf(&buf, "byte(%s)\n", strconv.QuoteRune(rune(v)))
				}
			}
			path := filepath.Join(dir, name)
			if write {
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, buf.Bytes()) {
				t.Errorf("%s is missing or stale (%v): run WIRE_WRITE_SEEDS=1 go test -run TestFuzzSeedCorpus", path, err)
			}
		}
	}
}
