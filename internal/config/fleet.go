package config

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"reflect"
)

// Fleet is what every box of one fleet shares, baked into the image at build
// time (`outpost image build --fleet FILE`) and read by outpostd from
// /etc/outpost/fleet.json. Later subsystems give each field its use: the
// cloud link dials BrokerURL trusting CAPEM, commands, tokens and updates are
// checked against PublicKey, and the clock comes from NTPServers.
type Fleet struct {
	// Name identifies the fleet in logs and on the LAN page.
	Name string `json:"name" required:"true"`
	// BrokerURL is the fleet's MQTT broker: mqtts://host:8883 or
	// wss://host:443/mqtt.
	BrokerURL string `json:"broker_url" required:"true"`
	// CAPEM is the PEM certificate(s) the broker's certificate chains to.
	CAPEM string `json:"ca_pem"`
	// PublicKey is the fleet's Ed25519 public key, base64 (standard encoding).
	PublicKey string `json:"public_key"`
	// NTPServers are the only time servers the box asks (host or host:port).
	// Empty: the box keeps its saved time and the link keeps queueing.
	NTPServers []string `json:"ntp_servers"`
	// ClaimCertPEM and ClaimKeyPEM are the fleet's claim credential: a client
	// certificate every image carries, which the broker lets do one thing —
	// ask to be enrolled. A box connects with it until the operator has
	// claimed it, then with its own certificate.
	ClaimCertPEM string `json:"claim_cert_pem"`
	ClaimKeyPEM  string `json:"claim_key_pem"`
	// OTARoot pins the update root of trust (docs/ota.md): empty refuses
	// every update.
	OTARoot OTARoot `json:"ota_root"`
}

// OTARoot is the fleet's update root: Ed25519 public keys (base64) and how
// many of them must sign a release-keys document.
type OTARoot struct {
	Keys      []string `json:"keys"`
	Threshold int      `json:"threshold"`
}

// PublicKeys decodes Keys.
func (o OTARoot) PublicKeys() ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for i, k := range o.Keys {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, &FieldError{fmt.Sprintf("ota_root.keys[%d]", i), fmt.Errorf("%w: not a base64 Ed25519 public key", ErrInvalid)}
		}
		out = append(out, b)
	}
	if len(out) > 0 && (o.Threshold < 1 || o.Threshold > len(out)) {
		return nil, &FieldError{"ota_root.threshold", fmt.Errorf("%w: want 1..%d", ErrInvalid, len(out))}
	}
	return out, nil
}

// ParseFleet decodes and validates a fleet document strictly.
func ParseFleet(b []byte) (Fleet, error) {
	var f Fleet
	if len(b) > MaxSize {
		return f, fmt.Errorf("larger than %d bytes", MaxSize)
	}
	if err := decodeStrict(bytes.TrimSpace(b), reflect.ValueOf(&f).Elem(), ""); err != nil {
		return Fleet{}, err
	}
	return f, f.Validate()
}

// LoadFleet reads a fleet file.
func LoadFleet(path string) (Fleet, error) {
	fh, err := os.Open(path)
	if err != nil {
		return Fleet{}, fmt.Errorf("fleet: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, MaxSize+1))
	if err != nil {
		return Fleet{}, fmt.Errorf("fleet %s: %w", path, err)
	}
	f, err := ParseFleet(b)
	if err != nil {
		return Fleet{}, fmt.Errorf("fleet %s: %w", path, err)
	}
	return f, nil
}

// Validate checks each field's form.
func (f Fleet) Validate() error {
	if _, err := f.OTARoot.PublicKeys(); err != nil {
		return err
	}
	if f.Name == "" {
		return &FieldError{"name", ErrMissing}
	}
	u, err := url.Parse(f.BrokerURL)
	if err != nil || u.Host == "" {
		return &FieldError{"broker_url", fmt.Errorf("%w: %q is not a URL with a host", ErrInvalid, f.BrokerURL)}
	}
	switch u.Scheme {
	case "mqtts", "ssl", "tls", "wss":
	case "mqtt", "tcp", "ws":
		// Plain transports are for the demo and tests on loopback only.
		if ip := net.ParseIP(u.Hostname()); !(u.Hostname() == "localhost" || ip != nil && ip.IsLoopback()) {
			return &FieldError{"broker_url", fmt.Errorf("%w: %s without TLS is only allowed to loopback", ErrInvalid, u.Scheme)}
		}
	default:
		return &FieldError{"broker_url", fmt.Errorf("%w: scheme %q, want mqtts or wss", ErrInvalid, u.Scheme)}
	}
	if f.CAPEM != "" {
		rest := []byte(f.CAPEM)
		n := 0
		for {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
				return &FieldError{"ca_pem", fmt.Errorf("%w: %w", ErrInvalid, err)}
			}
			n++
		}
		if n == 0 {
			return &FieldError{"ca_pem", fmt.Errorf("%w: no PEM certificate", ErrInvalid)}
		}
	}
	if f.PublicKey != "" {
		k, err := base64.StdEncoding.DecodeString(f.PublicKey)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return &FieldError{"public_key", fmt.Errorf("%w: want %d bytes of base64 Ed25519 key", ErrInvalid, ed25519.PublicKeySize)}
		}
	}
	if (f.ClaimCertPEM == "") != (f.ClaimKeyPEM == "") {
		return &FieldError{"claim_key_pem", fmt.Errorf("%w: claim certificate and key come together", ErrInvalid)}
	}
	if f.ClaimCertPEM != "" {
		if _, err := tls.X509KeyPair([]byte(f.ClaimCertPEM), []byte(f.ClaimKeyPEM)); err != nil {
			return &FieldError{"claim_cert_pem", fmt.Errorf("%w: %w", ErrInvalid, err)}
		}
	}
	for i, s := range f.NTPServers {
		host := s
		if h, _, err := net.SplitHostPort(s); err == nil {
			host = h
		}
		if host == "" || len(host) > 253 {
			return &FieldError{fmt.Sprintf("ntp_servers[%d]", i), fmt.Errorf("%w: %q", ErrInvalid, s)}
		}
	}
	return nil
}
