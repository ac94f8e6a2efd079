package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
)

func TestParseFleet(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	key := base64.StdEncoding.EncodeToString(pub)
	for _, tc := range []struct {
		name, doc, field string
	}{
		{"ok", fmt.Sprintf(`{"name":"acme","broker_url":"mqtts://broker.acme.example:8883","public_key":%q,"ntp_servers":["ntp.acme.example"]}`, key), ""},
		{"ok wss", `{"name":"acme","broker_url":"wss://broker.acme.example/mqtt"}`, ""},
		{"ok plain loopback", `{"name":"demo","broker_url":"mqtt://127.0.0.1:1883"}`, ""},
		{"plain remote", `{"name":"acme","broker_url":"mqtt://broker.acme.example:1883"}`, "broker_url"},
		{"missing name", `{"broker_url":"mqtts://b:8883"}`, "name"},
		{"missing broker", `{"name":"acme"}`, "broker_url"},
		{"bad scheme", `{"name":"acme","broker_url":"http://b"}`, "broker_url"},
		{"bad key", `{"name":"acme","broker_url":"mqtts://b:8883","public_key":"AAAA"}`, "public_key"},
		{"bad ca", `{"name":"acme","broker_url":"mqtts://b:8883","ca_pem":"nope"}`, "ca_pem"},
		{"unknown", `{"name":"acme","broker_url":"mqtts://b:8883","colour":1}`, "colour"},
		{"ok ota_root", fmt.Sprintf(`{"name":"acme","broker_url":"mqtts://b:8883","ota_root":{"keys":[%q],"threshold":1}}`, key), ""},
		{"bad ota key", `{"name":"acme","broker_url":"mqtts://b:8883","ota_root":{"keys":["AAAA"],"threshold":1}}`, "ota_root.keys[0]"},
		{"bad ota threshold", fmt.Sprintf(`{"name":"acme","broker_url":"mqtts://b:8883","ota_root":{"keys":[%q],"threshold":2}}`, key), "ota_root.threshold"},
		{"bad ntp", `{"name":"acme","broker_url":"mqtts://b:8883","ntp_servers":[""]}`, "ntp_servers[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFleet([]byte(tc.doc))
			if tc.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want field %q", err, tc.field)
			}
		})
	}
}

func FuzzParseFleet(f *testing.F) {
	f.Add([]byte(`{"name":"acme","broker_url":"mqtts://b:8883","ntp_servers":["a"]}`))
	f.Add([]byte(`{"name":"acme","broker_url":"wss://b/mqtt","ca_pem":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}`))
	f.Add([]byte(`{"name":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fl, err := ParseFleet(b)
		if err == nil {
			if err := fl.Validate(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
