package wire

import (
	"encoding/json"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Describe renders an envelope's body for people (CLI output, logs): the
// typed body as JSON when the type is known, else the raw value.
func Describe(e Envelope) string {
	if b, ok := NewBody(e.Type); ok {
		if err := DecodeBody(e, b, DefaultLimits()); err != nil {
			return fmt.Sprintf("%s (undecodable: %v)", e.Type, err)
		}
		j, _ := json.Marshal(b)
		return e.Type + " " + string(j)
	}
	return e.Type + " " + DescribeRaw(e.Body)
}

// DescribeRaw renders a validated msgpack value (e.g. a command's result).
func DescribeRaw(raw []byte) string {
	if len(raw) == 0 {
		return ""
	}
	if err := Validate(raw, DefaultLimits()); err != nil {
		return fmt.Sprintf("(invalid: %v)", err)
	}
	var v any
	if err := msgpack.Unmarshal(raw, &v); err != nil {
		return fmt.Sprintf("(undecodable: %v)", err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(j)
}
