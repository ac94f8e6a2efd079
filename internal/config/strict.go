package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// decodeStrict decodes raw into v, walking structs itself so that every error
// carries the full dotted path of the field, which encoding/json's
// DisallowUnknownFields does not give for nested objects.
func decodeStrict(raw []byte, v reflect.Value, path string) error {
	if len(raw) == 0 {
		return &FieldError{orRoot(path), fmt.Errorf("%w: empty document", ErrMissing)}
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		if err := v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
			return &FieldError{orRoot(path), fmt.Errorf("%w: %w", ErrWrongType, err)}
		}
		return nil
	}
	if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct {
		return decodeStructs(raw, v, path)
	}
	if v.Kind() != reflect.Struct {
		if raw[0] == 'n' { // null keeps the default
			return nil
		}
		if err := json.Unmarshal(raw, v.Addr().Interface()); err != nil {
			return &FieldError{orRoot(path), fmt.Errorf("%w: want %s, got %s", ErrWrongType, typeName(v.Type()), kindOf(raw))}
		}
		return nil
	}
	if raw[0] != '{' {
		return &FieldError{orRoot(path), fmt.Errorf("%w: want an object, got %s", ErrWrongType, kindOf(raw))}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // {
		return &FieldError{orRoot(path), fmt.Errorf("%w: %w", ErrInvalid, err)}
	}
	seen := map[string]bool{}
	t := v.Type()
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return &FieldError{orRoot(path), fmt.Errorf("%w: malformed JSON: %w", ErrInvalid, err)}
		}
		key, _ := tok.(string)
		fpath := join(path, key)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return &FieldError{fpath, fmt.Errorf("%w: malformed JSON: %w", ErrInvalid, err)}
		}
		idx := fieldIndex(t, key)
		if idx < 0 {
			return &FieldError{fpath, ErrUnknownField}
		}
		if seen[key] {
			return &FieldError{fpath, fmt.Errorf("%w: given twice", ErrInvalid)}
		}
		seen[key] = true
		if err := decodeStrict(bytes.TrimSpace(val), v.Field(idx), fpath); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // }
		return &FieldError{orRoot(path), fmt.Errorf("%w: malformed JSON: %w", ErrInvalid, err)}
	}
	if path == "" {
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return &FieldError{"(document)", fmt.Errorf("%w: trailing data after the object", ErrInvalid)}
		}
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Tag.Get("required") == "true" && !seen[jsonName(f)] {
			return &FieldError{join(path, jsonName(f)), ErrMissing}
		}
	}
	return nil
}

func fieldIndex(t reflect.Type, key string) int {
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); f.IsExported() && jsonName(f) == key {
			return i
		}
	}
	return -1
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "" {
		return f.Name
	}
	return name
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(path string) string {
	if path == "" {
		return "(document)"
	}
	return path
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Uint32:
		return "an integer"
	case reflect.Float64, reflect.Float32:
		return "a number"
	case reflect.Slice:
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(typeName(t.Elem()), "a "), "an ") + "s"
	}
	return t.String()
}

func kindOf(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "a list"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// decodeStructs decodes a list of objects strictly, element by element, so
// that errors name the element: "recorder.cameras[1].url".
func decodeStructs(raw []byte, v reflect.Value, path string) error {
	if raw[0] == 'n' {
		return nil
	}
	if raw[0] != '[' {
		return &FieldError{orRoot(path), fmt.Errorf("%w: want a list, got %s", ErrWrongType, kindOf(raw))}
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(raw, &elems); err != nil {
		return &FieldError{orRoot(path), fmt.Errorf("%w: malformed JSON: %w", ErrInvalid, err)}
	}
	out := reflect.MakeSlice(v.Type(), len(elems), len(elems))
	for i, e := range elems {
		if err := decodeStrict(bytes.TrimSpace(e), out.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return err
		}
	}
	v.Set(out)
	return nil
}
