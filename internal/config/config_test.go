package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseGood(t *testing.T) {
	for _, tc := range []struct {
		name  string
		doc   string
		check func(Config) bool
	}{
		{"minimal", `{"config_version": 1}`, func(c Config) bool { return c.LAN.HTTPSAddr == ":443" && c.Watchdog.Interval.D() == 10*time.Second }},
		{"override nested", `{"config_version":1,"lan":{"https_addr":"127.0.0.1:8443","http_addr":""}}`,
			func(c Config) bool {
				return c.LAN.HTTPSAddr == "127.0.0.1:8443" && c.LAN.HTTPAddr == "" && len(c.LAN.Hostnames) == 2
			}},
		{"duration", `{"config_version":1,"watchdog":{"interval":"2s"}}`, func(c Config) bool { return c.Watchdog.Interval.D() == 2*time.Second }},
		{"null keeps default", `{"config_version":1,"log_level":null}`, func(c Config) bool { return c.LogLevel == "info" }},
		{"watchdog disabled with empty device", `{"config_version":1,"watchdog":{"disabled":true,"device":""}}`, func(c Config) bool { return c.Watchdog.Disabled }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	for _, tc := range []struct {
		name, doc, field string
		kind             error
	}{
		{"unknown top-level", `{"config_version":1,"colour":"red"}`, "colour", ErrUnknownField},
		{"unknown nested", `{"config_version":1,"lan":{"htps_addr":":443"}}`, "lan.htps_addr", ErrUnknownField},
		{"wrong type string", `{"config_version":1,"lan":{"https_addr":443}}`, "lan.https_addr", ErrWrongType},
		{"wrong type int", `{"config_version":"1"}`, "config_version", ErrWrongType},
		{"wrong type object", `{"config_version":1,"lan":[]}`, "lan", ErrWrongType},
		{"wrong type list", `{"config_version":1,"lan":{"hostnames":"outpost"}}`, "lan.hostnames", ErrWrongType},
		{"wrong type duration", `{"config_version":1,"watchdog":{"interval":10}}`, "watchdog.interval", ErrWrongType},
		{"bad duration", `{"config_version":1,"watchdog":{"interval":"ten"}}`, "watchdog.interval", ErrWrongType},
		{"missing required", `{"log_level":"info"}`, "config_version", ErrMissing},
		{"empty document", ``, "(document)", ErrMissing},
		{"missing https addr", `{"config_version":1,"lan":{"https_addr":""}}`, "lan.https_addr", ErrMissing},
		{"duplicate key", `{"config_version":1,"config_version":1}`, "config_version", ErrInvalid},
		{"future version", `{"config_version":2}`, "config_version", ErrInvalid},
		{"bad level", `{"config_version":1,"log_level":"loud"}`, "log_level", ErrInvalid},
		{"bad addr", `{"config_version":1,"lan":{"https_addr":"nope"}}`, "lan.https_addr", ErrInvalid},
		{"bad hostname", `{"config_version":1,"lan":{"hostnames":["a b"]}}`, "lan.hostnames[0]", ErrInvalid},
		{"interval too short", `{"config_version":1,"watchdog":{"interval":"1ms"}}`, "watchdog.interval", ErrInvalid},
		{"not an object", `[1]`, "(document)", ErrWrongType},
		{"trailing data", `{"config_version":1} {}`, "(document)", ErrInvalid},
		{"truncated", `{"config_version":1,`, "(document)", ErrInvalid},
		{"bad proxy", `{"config_version":1,"cloud":{"proxy":"socks5://p:1080"}}`, "cloud.proxy", ErrInvalid},
		{"camera unknown field", `{"config_version":1,"recorder":{"cameras":[{"id":"a","url":"rtsp://c/x"},{"id":"b","url":"rtsp://c/y","pasword":"x"}]}}`, "recorder.cameras[1].pasword", ErrUnknownField},
		{"camera missing url", `{"config_version":1,"recorder":{"cameras":[{"id":"a"}]}}`, "recorder.cameras[0].url", ErrMissing},
		{"camera bad id", `{"config_version":1,"recorder":{"cameras":[{"id":"../x","url":"rtsp://c/x"}]}}`, "recorder.cameras[0].id", ErrInvalid},
		{"camera twice", `{"config_version":1,"recorder":{"cameras":[{"id":"a","url":"rtsp://c/x"},{"id":"a","url":"rtsp://c/y"}]}}`, "recorder.cameras[1].id", ErrInvalid},
		{"camera bad live mode", `{"config_version":1,"recorder":{"cameras":[{"id":"a","url":"rtsp://c/x","live":"public"}]}}`, "recorder.cameras[0].live", ErrInvalid},
		{"camera users without users", `{"config_version":1,"recorder":{"cameras":[{"id":"a","url":"rtsp://c/x","live":"users"}]}}`, "recorder.cameras[0].live", ErrInvalid},
		{"camera bad recorded mode", `{"config_version":1,"recorder":{"cameras":[{"id":"a","url":"rtsp://c/x","recorded":"cloud"}]}}`, "recorder.cameras[0].recorded", ErrInvalid},
		{"bad site subnet", `{"config_version":1,"lan":{"site_subnets":["lan"]}}`, "lan.site_subnets", ErrInvalid},
		{"camera not rtsp", `{"config_version":1,"recorder":{"cameras":[{"id":"a","url":"http://c/x"}]}}`, "recorder.cameras[0].url", ErrInvalid},
		{"cameras not a list", `{"config_version":1,"recorder":{"cameras":{}}}`, "recorder.cameras", ErrWrongType},
		{"zero budget", `{"config_version":1,"cloud":{"outbox_budget_mb":0}}`, "cloud.outbox_budget_mb", ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a FieldError", err)
			}
			if fe.Field != tc.field || !errors.Is(err, tc.kind) {
				t.Errorf("err = %v (field %q), want field %q and %v", err, fe.Field, tc.field, tc.kind)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.json")
	os.WriteFile(p, []byte(`{"config_version":1,"lan":{"https_addr":true}}`), 0o600)
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), `"lan.https_addr"`) {
		t.Fatalf("Load error = %v, want one naming file and field", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("want error for a missing file")
	}
	big := make([]byte, MaxSize+10)
	os.WriteFile(p, big, 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Fatalf("Load(big) = %v", err)
	}
}

func TestDefaultValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"config_version":1}`,
		`{"config_version":1,"lan":{"https_addr":"127.0.0.1:0","hostnames":["a"]},"watchdog":{"interval":"1s"}}`,
		`{"lan":{"x":1}}`, `[]`, `{"config_version":1,"config_version":2}`, `nul`, `{"watchdog":{"interval":"9h"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", err)
		}
	})
}
