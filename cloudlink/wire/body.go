package wire

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
)

// Message types of the link. Bodies are msgpack maps keyed by the short
// snake_case names in the struct tags; unknown keys are ignored on decode.
const (
	TypeTelemetry      = "telemetry"
	TypeEvent          = "event"
	TypeAudit          = "audit"
	TypeCommand        = "command"
	TypeCommandResult  = "command_result"
	TypeConfigDesired  = "config.desired"
	TypeConfigReported = "config.reported"
	TypeEnrolRequest   = "enrol.request"
	TypeEnrolResponse  = "enrol.response"
)

// Semantic bounds the bodies' Validate methods enforce.
const (
	MaxEntries  = 256      // entries of one map field (metrics, labels, attrs)
	MaxKeyLen   = 128      // metric names, label and attr keys, board and version strings
	MaxValueLen = 1024     // label and attr values, audit strings, claim code
	MaxTextLen  = 4096     // event message and error strings
	MaxCertLen  = 16 << 10 // a CSR (DER) or one PEM field
)

// Event severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Body is a link-level message body: Type is the envelope type it travels
// in, Validate checks its semantic bounds (wrapping ErrInvalid). New and
// DecodeBody call both.
type Body interface {
	Type() string
	Validate() error
}

// NewBody returns a pointer to a zero body for a known type, for
// dispatching on Envelope.Type; false for a type this build does not know.
func NewBody(typ string) (Body, bool) {
	switch typ {
	case TypeTelemetry:
		return &Telemetry{}, true
	case TypeEvent:
		return &Event{}, true
	case TypeAudit:
		return &Audit{}, true
	case TypeCommand:
		return &Command{}, true
	case TypeCommandResult:
		return &CommandResult{}, true
	case TypeConfigDesired:
		return &ConfigDesired{}, true
	case TypeConfigReported:
		return &ConfigReported{}, true
	case TypeEnrolRequest:
		return &EnrolRequest{}, true
	case TypeEnrolResponse:
		return &EnrolResponse{}, true
	}
	return nil, false
}

// Telemetry is a sample of the box's metrics, sent upward periodically.
type Telemetry struct {
	// Metrics maps a metric name (1..MaxKeyLen bytes) to a finite value;
	// 1..MaxEntries entries.
	Metrics map[string]float64 `msgpack:"metrics"`
	// Labels apply to every metric of the sample; ≤ MaxEntries entries,
	// keys 1..MaxKeyLen, values ≤ MaxValueLen bytes.
	Labels map[string]string `msgpack:"labels,omitempty"`
}

// Type returns TypeTelemetry, the envelope type this body travels in.
func (Telemetry) Type() string { return TypeTelemetry }

// Validate checks the entry counts, the key and value lengths, and that
// every value is finite (no NaN or ±Inf).
func (t Telemetry) Validate() error {
	if len(t.Metrics) == 0 || len(t.Metrics) > MaxEntries {
		return invalid("telemetry: %d metrics, want 1..%d", len(t.Metrics), MaxEntries)
	}
	for k, v := range t.Metrics {
		if err := checkText("metric name", k, 1, MaxKeyLen); err != nil {
			return err
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return invalid("telemetry: metric %q is %v", k, v)
		}
	}
	return checkMap("telemetry labels", t.Labels)
}

// Event is something that happened on the box, worth a human's attention
// at Severity.
type Event struct {
	Kind     string            `msgpack:"kind"`            // what happened, ^[a-z][a-z0-9_.]{0,63}$, e.g. "camera.offline"
	Severity string            `msgpack:"severity"`        // SeverityInfo, SeverityWarning or SeverityCritical
	Message  string            `msgpack:"msg,omitempty"`   // for humans, ≤ MaxTextLen bytes
	Attrs    map[string]string `msgpack:"attrs,omitempty"` // ≤ MaxEntries, keys 1..MaxKeyLen, values ≤ MaxValueLen
}

// Type returns TypeEvent, the envelope type this body travels in.
func (Event) Type() string { return TypeEvent }

// Validate checks the kind's format, the severity enum and the lengths.
func (e Event) Validate() error {
	if checkName(e.Kind) != nil {
		return invalid("event: kind %q: want ^[a-z][a-z0-9_.]{0,63}$", e.Kind)
	}
	switch e.Severity {
	case SeverityInfo, SeverityWarning, SeverityCritical:
	default:
		return invalid("event: severity %q: want info, warning or critical", e.Severity)
	}
	if err := checkText("event message", e.Message, 0, MaxTextLen); err != nil {
		return err
	}
	return checkMap("event attrs", e.Attrs)
}

// Audit is one record of the box's hash-chained audit log. The chain is the
// audit log's business: wire checks only the shapes, not the hashes.
type Audit struct {
	Seq    uint64 `msgpack:"seq"`              // ≥ 1, consecutive per box
	Prev   []byte `msgpack:"prev"`             // Hash of record Seq-1; 32 zero bytes for Seq 1
	Hash   []byte `msgpack:"hash"`             // this record's chain hash, 32 bytes
	Actor  string `msgpack:"actor"`            // who: user, "system", a command id, ...
	Action string `msgpack:"action"`           // what was done
	Target string `msgpack:"target,omitempty"` // to what
	Source string `msgpack:"source,omitempty"` // from where: address, "console", "cloud", ...
	Result string `msgpack:"result"`           // "ok", "denied", an error, ...
}

// Type returns TypeAudit, the envelope type this body travels in.
func (Audit) Type() string { return TypeAudit }

// Validate checks Seq ≥ 1, 32-byte hashes, required Actor, Action and
// Result, and lengths ≤ MaxValueLen.
func (a Audit) Validate() error {
	if a.Seq == 0 {
		return invalid("audit: seq 0")
	}
	if len(a.Prev) != 32 || len(a.Hash) != 32 {
		return invalid("audit: prev and hash must be 32 bytes, got %d and %d", len(a.Prev), len(a.Hash))
	}
	for _, f := range []struct {
		name, v string
		min     int
	}{{"actor", a.Actor, 1}, {"action", a.Action, 1}, {"target", a.Target, 0}, {"source", a.Source, 0}, {"result", a.Result, 1}} {
		if err := checkText("audit "+f.name, f.v, f.min, MaxValueLen); err != nil {
			return err
		}
	}
	return nil
}

// Command asks the box to do something. The envelope ID is the command id:
// the box refuses an ID it has already run (replay protection) and a
// command past its Deadline. The reply route is not in the body: it is the
// MQTT v5 ResponseTopic and CorrelationData of the publish.
type Command struct {
	Name     string             // ^[a-z][a-z0-9_.]{0,63}$; key "name"
	Args     msgpack.RawMessage // one msgpack value, or empty for none; key "args"
	Deadline time.Time          // required; unix ms on the wire, key "deadline_ms"
}

type commandWire struct {
	Name       string             `msgpack:"name"`
	Args       msgpack.RawMessage `msgpack:"args,omitempty"`
	DeadlineMS int64              `msgpack:"deadline_ms"`
}

// Type returns TypeCommand, the envelope type this body travels in.
func (Command) Type() string { return TypeCommand }

// Validate checks the name's format, that Args is one acceptable msgpack
// value (if any), and that Deadline is set (not whether it has passed).
func (c Command) Validate() error {
	if checkName(c.Name) != nil {
		return invalid("command: name %q: want ^[a-z][a-z0-9_.]{0,63}$", c.Name)
	}
	if ms := c.Deadline.UnixMilli(); c.Deadline.IsZero() || ms <= 0 || ms > maxMillis {
		return invalid("command: deadline %v missing or out of range", c.Deadline)
	}
	return checkRaw("command args", c.Args)
}

// EncodeMsgpack writes the deadline as integer milliseconds (msgpack would
// use the timestamp ext, which Validate refuses).
func (c Command) EncodeMsgpack(e *msgpack.Encoder) error {
	w := commandWire{Name: c.Name, Args: c.Args}
	if !c.Deadline.IsZero() {
		w.DeadlineMS = c.Deadline.UnixMilli()
	}
	return e.Encode(w)
}

// DecodeMsgpack is the inverse of EncodeMsgpack; Deadline comes out in UTC.
func (c *Command) DecodeMsgpack(d *msgpack.Decoder) error {
	var w commandWire
	if err := d.Decode(&w); err != nil {
		return err
	}
	*c = Command{Name: w.Name, Args: w.Args}
	if w.DeadlineMS != 0 {
		c.Deadline = time.UnixMilli(w.DeadlineMS).UTC()
	}
	return nil
}

// CommandResult answers a Command; it is published to the command's
// ResponseTopic with its CorrelationData.
type CommandResult struct {
	CommandID ID                 `msgpack:"command_id"`       // the command envelope's ID
	OK        bool               `msgpack:"ok"`               // the command ran and succeeded
	Error     string             `msgpack:"error,omitempty"`  // why not, when !OK; ≤ MaxTextLen
	Result    msgpack.RawMessage `msgpack:"result,omitempty"` // one msgpack value, command-specific
}

// Type returns TypeCommandResult, the envelope type this body travels in.
func (CommandResult) Type() string { return TypeCommandResult }

// Validate checks a non-zero CommandID, that Error is set exactly when !OK,
// and that Result is one acceptable msgpack value (if any).
func (r CommandResult) Validate() error {
	if r.CommandID.IsZero() {
		return invalid("command_result: zero command id")
	}
	if r.OK != (r.Error == "") {
		return invalid("command_result: ok=%v with error %q: error must be set exactly when not ok", r.OK, r.Error)
	}
	if err := checkText("command_result error", r.Error, 0, MaxTextLen); err != nil {
		return err
	}
	return checkRaw("command_result result", r.Result)
}

// ConfigDesired is the daemon config the fleet wants the box to run
// (retained on the config topic).
type ConfigDesired struct {
	Version uint64 `msgpack:"version"` // ≥ 1, increases with every change
	Config  []byte `msgpack:"config"`  // the daemon config as a JSON document (docs/config.md)
}

// Type returns TypeConfigDesired, the envelope type this body travels in.
func (ConfigDesired) Type() string { return TypeConfigDesired }

// Validate checks Version ≥ 1 and that Config is well-formed JSON; the
// daemon's strict config decoder judges its content.
func (c ConfigDesired) Validate() error {
	if c.Version == 0 {
		return invalid("config.desired: version 0")
	}
	if !json.Valid(c.Config) {
		return invalid("config.desired: config is not a JSON document")
	}
	return nil
}

// ConfigReported tells the fleet which desired config the box tried and
// whether it runs it now.
type ConfigReported struct {
	Version uint64 `msgpack:"version"`         // the ConfigDesired.Version this is about, ≥ 1
	Applied bool   `msgpack:"applied"`         // the box runs that config
	Error   string `msgpack:"error,omitempty"` // why not, when !Applied; ≤ MaxTextLen
}

// Type returns TypeConfigReported, the envelope type this body travels in.
func (ConfigReported) Type() string { return TypeConfigReported }

// Validate checks Version ≥ 1 and that Error is set exactly when !Applied.
func (c ConfigReported) Validate() error {
	if c.Version == 0 {
		return invalid("config.reported: version 0")
	}
	if c.Applied != (c.Error == "") {
		return invalid("config.reported: applied=%v with error %q: error must be set exactly when not applied", c.Applied, c.Error)
	}
	return checkText("config.reported error", c.Error, 0, MaxTextLen)
}

// EnrolRequest asks the fleet for a client certificate, before the box has
// one (published on the enrolment topic with the bootstrap credentials).
type EnrolRequest struct {
	DeviceID  string `msgpack:"device_id"`  // see CheckDeviceID
	ClaimCode string `msgpack:"claim_code"` // what the installer typed into the fleet, 1..MaxValueLen
	CSR       []byte `msgpack:"csr"`        // DER certificate request naming DeviceID, 1..MaxCertLen bytes
	Board     string `msgpack:"board"`      // hardware model, 1..MaxKeyLen
	Version   string `msgpack:"version"`    // firmware version, 1..MaxKeyLen
}

// Type returns TypeEnrolRequest, the envelope type this body travels in.
func (EnrolRequest) Type() string { return TypeEnrolRequest }

// Validate checks the device id and the field lengths; the fleet parses and
// checks the CSR itself.
func (r EnrolRequest) Validate() error {
	if err := CheckDeviceID(r.DeviceID); err != nil {
		return err
	}
	if len(r.CSR) == 0 || len(r.CSR) > MaxCertLen {
		return invalid("enrol.request: csr of %d bytes, want 1..%d", len(r.CSR), MaxCertLen)
	}
	if err := checkText("enrol.request claim_code", r.ClaimCode, 1, MaxValueLen); err != nil {
		return err
	}
	if err := checkText("enrol.request board", r.Board, 1, MaxKeyLen); err != nil {
		return err
	}
	return checkText("enrol.request version", r.Version, 1, MaxKeyLen)
}

// EnrolResponse answers an EnrolRequest: the certificate, or why not.
type EnrolResponse struct {
	DeviceID string `msgpack:"device_id"`          // as in the request
	CertPEM  []byte `msgpack:"cert_pem,omitempty"` // the box's client certificate (chain), PEM
	CAPEM    []byte `msgpack:"ca_pem,omitempty"`   // the CA(s) the box trusts for the broker, PEM
	Error    string `msgpack:"error,omitempty"`    // refusal, ≤ MaxTextLen; then no PEM fields
}

// Type returns TypeEnrolResponse, the envelope type this body travels in.
func (EnrolResponse) Type() string { return TypeEnrolResponse }

// Validate checks the device id and that the response is either an error
// without certificates or two PEM fields (each ≤ MaxCertLen, starting with a
// PEM block) without an error.
func (r EnrolResponse) Validate() error {
	if err := CheckDeviceID(r.DeviceID); err != nil {
		return err
	}
	if r.Error != "" {
		if len(r.CertPEM) != 0 || len(r.CAPEM) != 0 {
			return invalid("enrol.response: error together with certificates")
		}
		return checkText("enrol.response error", r.Error, 1, MaxTextLen)
	}
	for _, f := range []struct {
		name string
		v    []byte
	}{{"cert_pem", r.CertPEM}, {"ca_pem", r.CAPEM}} {
		if len(f.v) == 0 || len(f.v) > MaxCertLen {
			return invalid("enrol.response: %s of %d bytes, want 1..%d", f.name, len(f.v), MaxCertLen)
		}
		if b, _ := pem.Decode(f.v); b == nil {
			return invalid("enrol.response: %s holds no PEM block", f.name)
		}
	}
	return nil
}

// CheckDeviceID checks a device id's format: 1..64 bytes of [a-z0-9_-],
// starting with a letter or digit (identity's "op-…" ids fit). It appears
// in topics, so it must never hold '/', '+' or '#'.
func CheckDeviceID(s string) error {
	ok := len(s) >= 1 && len(s) <= 64 && s[0] != '-' && s[0] != '_'
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
	}
	if !ok {
		return invalid("device id %q: want 1..64 of [a-z0-9_-], not starting with - or _", s)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}

func checkText(field, s string, minLen, maxLen int) error {
	if len(s) < minLen || len(s) > maxLen {
		return invalid("%s of %d bytes, want %d..%d", field, len(s), minLen, maxLen)
	}
	if !utf8.ValidString(s) {
		return invalid("%s is not UTF-8", field)
	}
	return nil
}

func checkMap(field string, m map[string]string) error {
	if len(m) > MaxEntries {
		return invalid("%s: %d entries, limit %d", field, len(m), MaxEntries)
	}
	for k, v := range m {
		if err := checkText(field+" key", k, 1, MaxKeyLen); err != nil {
			return err
		}
		if err := checkText(field+" value", v, 0, MaxValueLen); err != nil {
			return err
		}
	}
	return nil
}

// checkRaw accepts an empty RawMessage or exactly one value Validate passes.
func checkRaw(field string, b msgpack.RawMessage) error {
	if len(b) == 0 {
		return nil
	}
	if err := Validate(b, DefaultLimits()); err != nil {
		return fmt.Errorf("%s: %w: %w", field, ErrInvalid, err)
	}
	return nil
}
