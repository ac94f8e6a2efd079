// Package identity is the box's cryptographic identity: an ECDSA P-256 key
// made on first boot, the device id and human claim code derived once from
// that first key (they stay when the key is rotated), the certificate
// signing request sent at enrolment and renewal, and the fleet-signed
// certificate.
//
// Key and certificate live together in one PEM file (0600), replaced
// atomically, so a power cut during a renewal leaves the old pair or the new
// pair, never a key with another key's certificate.
package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/outpost-gw/outpost/internal/atomicfile"
)

// File names inside the identity directory.
const (
	// PEMFile holds the private key and, once enrolled, the certificate chain.
	PEMFile = "device.pem"
	// NameFile holds the device id and claim code, fixed at first boot.
	NameFile = "device.json"
)

// crockford is Crockford's base32 alphabet: no I, L, O or U, so a claim code
// read off a screen cannot be mistyped into another valid code.
var crockford = base32.NewEncoding("0123456789ABCDEFGHJKMNPQRSTVWXYZ").WithPadding(base32.NoPadding)

// ErrNoCertificate means the box has a key but has not been enrolled yet.
var ErrNoCertificate = errors.New("no device certificate yet (not enrolled)")

// Identity is the box's key and, once enrolled, its certificate.
type Identity struct {
	mu        sync.RWMutex // Key, Cert, CertPEM change on renewal
	dir       string
	deviceID  string
	claimCode string
	Key       *ecdsa.PrivateKey
	Cert      *x509.Certificate // nil until enrolled
	// CertPEM is the certificate chain as stored, leaf first.
	CertPEM []byte
}

type names struct {
	DeviceID  string `json:"device_id"`
	ClaimCode string `json:"claim_code"`
}

// LoadOrCreate loads the identity in dir, making a key the first time.
func LoadOrCreate(dir string) (*Identity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	id := &Identity{dir: dir}
	pemPath := filepath.Join(dir, PEMFile)
	b, err := os.ReadFile(pemPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("identity: key: %w", err)
		}
		// Names first: a key without names is re-named from itself below.
		n := names{DeviceID: DeviceIDFor(&key.PublicKey), ClaimCode: ClaimCodeFor(&key.PublicKey)}
		if err := writeJSON(filepath.Join(dir, NameFile), n); err != nil {
			return nil, err
		}
		if err := id.write(key, nil); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("identity: %w", err)
	default:
		if err := id.parse(b); err != nil {
			return nil, fmt.Errorf("identity: %s: %w", pemPath, err)
		}
	}
	nb, err := os.ReadFile(filepath.Join(dir, NameFile))
	var n names
	if err == nil {
		err = json.Unmarshal(nb, &n)
	}
	if err != nil || n.DeviceID == "" {
		return nil, fmt.Errorf("identity: %s unreadable (%v); the box cannot know its name", NameFile, err)
	}
	id.deviceID, id.claimCode = n.DeviceID, n.ClaimCode
	if id.Cert != nil && id.Cert.Subject.CommonName != id.deviceID {
		return nil, fmt.Errorf("identity: certificate names %q, this box is %q", id.Cert.Subject.CommonName, id.deviceID)
	}
	return id, nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

// write stores key and chain in one file, atomically.
func (id *Identity) write(key *ecdsa.PrivateKey, certPEM []byte) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	out = append(out, certPEM...)
	if err := atomicfile.WriteFile(filepath.Join(id.dir, PEMFile), out, 0o600); err != nil {
		return err
	}
	id.Key, id.CertPEM, id.Cert = key, certPEM, nil
	if len(certPEM) > 0 {
		id.Cert, err = parseLeaf(certPEM)
	}
	return err
}

func (id *Identity) parse(b []byte) error {
	var certPEM []byte
	for rest := b; ; {
		blk, r := pem.Decode(rest)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return err
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return fmt.Errorf("key is %T, want ECDSA", k)
			}
			id.Key = ek
		case "CERTIFICATE":
			certPEM = append(certPEM, rest[:len(rest)-len(r)]...)
		}
		rest = r
	}
	if id.Key == nil {
		return errors.New("no private key")
	}
	if len(certPEM) > 0 {
		cert, err := parseLeaf(certPEM)
		if err != nil {
			return err
		}
		if !keyMatches(cert, &id.Key.PublicKey) {
			return errors.New("certificate is not for the stored key")
		}
		id.Cert, id.CertPEM = cert, certPEM
	}
	return nil
}

func parseLeaf(certPEM []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(certPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func keyMatches(cert *x509.Certificate, pub *ecdsa.PublicKey) bool {
	p, ok := cert.PublicKey.(*ecdsa.PublicKey)
	return ok && p.Equal(pub)
}

// SetCertificate stores the fleet-signed certificate chain (PEM, leaf
// first) for the current key, after checking it names this box.
func (id *Identity) SetCertificate(certPEM []byte) error {
	id.mu.RLock()
	key := id.Key
	id.mu.RUnlock()
	return id.Install(key, certPEM)
}

// Install replaces key and certificate together (enrolment or renewal with
// a new key made by NewKey).
func (id *Identity) Install(key *ecdsa.PrivateKey, certPEM []byte) error {
	id.mu.Lock()
	defer id.mu.Unlock()
	cert, err := parseLeaf(certPEM)
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	if !keyMatches(cert, &key.PublicKey) {
		return errors.New("identity: certificate is not for this key")
	}
	if cert.Subject.CommonName != id.deviceID {
		return fmt.Errorf("identity: certificate names %q, this box is %q", cert.Subject.CommonName, id.deviceID)
	}
	return id.write(key, certPEM)
}

// NewKey makes a fresh key for a renewal; it is not stored until Install.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// Enrolled reports whether the box has a certificate.
func (id *Identity) Enrolled() bool {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.Cert != nil
}

// DeviceID names the box: "op-" and 16 base32 characters of the SHA-256 of
// its first public key. It is the MQTT client id, the certificate's common
// name and the topic prefix.
func (id *Identity) DeviceID() string { return id.deviceID }

// DeviceIDFor derives the device id of a public key.
func DeviceIDFor(pub *ecdsa.PublicKey) string {
	h := spkiHash(pub)
	return "op-" + strings.ToLower(crockford.EncodeToString(h[:10]))
}

// ClaimCode is what the installer reads off the LAN page or console and
// the operator types into `outpost fleet claim`: 8 Crockford base32
// characters as XXXX-XXXX, from other bits of the key hash than the id.
func (id *Identity) ClaimCode() string { return id.claimCode }

// ClaimCodeFor derives the claim code of a public key.
func ClaimCodeFor(pub *ecdsa.PublicKey) string {
	h := spkiHash(pub)
	c := crockford.EncodeToString(h[20:25])
	return c[:4] + "-" + c[4:8]
}

// NormalizeClaimCode upper-cases a typed code, drops separators and maps
// the letters Crockford reads as digits (O→0, I/L→1).
func NormalizeClaimCode(s string) string {
	s = strings.NewReplacer("-", "", " ", "", "O", "0", "I", "1", "L", "1").Replace(strings.ToUpper(s))
	if len(s) == 8 {
		return s[:4] + "-" + s[4:]
	}
	return s
}

func spkiHash(pub *ecdsa.PublicKey) [32]byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	return sha256.Sum256(der)
}

// CSR returns a DER certificate signing request naming this box, signed by
// key (the current key, or a new one for a renewal).
func (id *Identity) CSR(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id.deviceID},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("identity: csr: %w", err)
	}
	return der, nil
}

// TLSCertificate is the client certificate for mTLS; ErrNoCertificate
// before enrolment.
func (id *Identity) TLSCertificate() (tls.Certificate, error) {
	id.mu.RLock()
	defer id.mu.RUnlock()
	if id.Cert == nil {
		return tls.Certificate{}, ErrNoCertificate
	}
	var chain [][]byte
	rest := id.CertPEM
	for {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		chain = append(chain, blk.Bytes)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: id.Key, Leaf: id.Cert}, nil
}

// NeedsRenewal reports whether the certificate is older than renewAfter or
// expires within the same span.
func (id *Identity) NeedsRenewal(now time.Time, renewAfter time.Duration) bool {
	id.mu.RLock()
	defer id.mu.RUnlock()
	if id.Cert == nil {
		return false
	}
	return now.Sub(id.Cert.NotBefore) >= renewAfter || id.Cert.NotAfter.Sub(now) <= renewAfter
}
