// Package fleet is the operator's side of a fleet, kept in one directory:
// the fleet CA that signs every box's certificate, the Ed25519 key that signs
// commands, tokens and releases, the claim credential baked into images, the
// broker's and the operator's certificates, the registry of boxes with their
// revocations (as a CRL), and the broker configuration with per-device ACLs.
//
// Private keys are 0600 and written atomically; the directory is the fleet's
// crown jewels and belongs on the operator's machine, not on a box.
package fleet

import (
	"crypto"
	"crypto/ecdsa"

	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/identity"
	"github.com/outpost-gw/outpost/internal/atomicfile"
	"github.com/outpost-gw/outpost/internal/config"
)

// Files in a fleet directory.
const (
	FleetFile    = "fleet.json" // the fleet file for `outpost image build --fleet`
	caCert       = "ca.crt"
	caKey        = "ca.key"
	signingKey   = "signing.key"
	claimCert    = "claim.crt"
	claimKey     = "claim.key"
	brokerCert   = "broker.crt"
	brokerKey    = "broker.key"
	operatorCert = "operator.crt"
	operatorKey  = "operator.key"
	// The operator CA signs only operator identities: the broker's operator
	// listener trusts it alone, so no box certificate can connect there.
	operatorCACert = "operator-ca.crt"
	operatorCAKey  = "operator-ca.key"
	registryFile   = "devices.json"
	crlFile        = "crl.pem"
	metaFile       = "meta.json"
)

// Common names of the fleet's non-device identities. Device ids start with
// "op-", so neither can be taken by a box.
const (
	ClaimUser    = "claim"
	OperatorUser = "operator"
)

// DeviceCertValidity is how long a box's certificate lasts; boxes renew
// weekly by default, so a box offline for three weeks still reconnects.
const DeviceCertValidity = 30 * 24 * time.Hour

// ErrExists means Init found a fleet already there.
var ErrExists = errors.New("a fleet already exists in this directory")

// Fleet is an open fleet directory.
type Fleet struct {
	Dir  string
	Name string
	// OperatorURL is where operator tools dial the broker, if not where
	// boxes do (SetOperatorURL).
	OperatorURL string
	// Now is the clock; tests replace it.
	Now func() time.Time

	ca      *x509.Certificate
	caKey   crypto.Signer
	signing ed25519.PrivateKey

	mu sync.Mutex // registry and CRL
}

// InitOptions describe a new fleet.
type InitOptions struct {
	Name string
	// BrokerURL is what boxes dial: mqtts://host:8883 or wss://host:443/mqtt.
	BrokerURL string
	// BrokerHosts go into the broker's certificate (names and addresses).
	BrokerHosts []string
	NTPServers  []string
}

type meta struct {
	Name string `json:"name"`
	// OperatorURL is where operator tools reach the broker (mosquitto's
	// operator listener); empty: the boxes' broker URL (the embedded broker
	// takes operators and boxes on one listener).
	OperatorURL string `json:"operator_url,omitempty"`
}

// Init creates a fleet in dir (which must not hold one).
func Init(dir string, o InitOptions) (*Fleet, error) {
	if _, err := os.Stat(filepath.Join(dir, caKey)); err == nil {
		return nil, fmt.Errorf("%s: %w", dir, ErrExists)
	}
	if o.Name == "" || o.BrokerURL == "" {
		return nil, errors.New("fleet init: a name and a broker URL are required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	f := &Fleet{Dir: dir, Name: o.Name, Now: time.Now}
	der, key, err := selfSignedCA(o.Name, "Outpost fleet CA "+o.Name, f.now())
	if err != nil {
		return nil, err
	}
	if err := writePair(f.path(caCert), f.path(caKey), der, key); err != nil {
		return nil, err
	}
	f.ca, _ = x509.ParseCertificate(der)
	f.caKey = key
	opDER, opKey, err := selfSignedCA(o.Name, "Outpost operator CA "+o.Name, f.now())
	if err != nil {
		return nil, err
	}
	if err := writePair(f.path(operatorCACert), f.path(operatorCAKey), opDER, opKey); err != nil {
		return nil, err
	}
	opCA, _ := x509.ParseCertificate(opDER)
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	skPEM, err := keyPEM(sk)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(f.path(signingKey), skPEM, 0o600); err != nil {
		return nil, err
	}
	f.signing = sk
	for _, c := range []struct {
		cn, cert, key string
		hosts         []string
		client        bool
		validity      time.Duration
		ca            *x509.Certificate
		caKey         crypto.Signer
	}{
		{ClaimUser, claimCert, claimKey, nil, true, 20 * 365 * 24 * time.Hour, f.ca, f.caKey},
		{OperatorUser, operatorCert, operatorKey, nil, true, 5 * 365 * 24 * time.Hour, opCA, opKey},
		{"broker", brokerCert, brokerKey, o.BrokerHosts, false, 5 * 365 * 24 * time.Hour, f.ca, f.caKey},
	} {
		k, err := newKey()
		if err != nil {
			return nil, err
		}
		der, err := f.issueBy(c.ca, c.caKey, c.cn, &k.PublicKey, c.hosts, c.client, c.validity)
		if err != nil {
			return nil, fmt.Errorf("issuing %s certificate: %w", c.cn, err)
		}
		if err := writePair(f.path(c.cert), f.path(c.key), der, k); err != nil {
			return nil, err
		}
	}
	if err := f.writeJSON(metaFile, meta{Name: o.Name}, 0o644); err != nil {
		return nil, err
	}
	if err := f.writeCRL(nil); err != nil {
		return nil, err
	}
	ff, err := f.makeFleetFile(o.BrokerURL, o.NTPServers)
	if err != nil {
		return nil, err
	}
	if err := f.writeJSON(FleetFile, ff, 0o600); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Fleet) makeFleetFile(brokerURL string, ntp []string) (config.Fleet, error) {
	cc, err := os.ReadFile(f.path(claimCert))
	if err != nil {
		return config.Fleet{}, err
	}
	ck, err := os.ReadFile(f.path(claimKey))
	if err != nil {
		return config.Fleet{}, err
	}
	ff := config.Fleet{
		Name:         f.Name,
		BrokerURL:    brokerURL,
		CAPEM:        string(certPEM(f.ca.Raw)),
		PublicKey:    base64.StdEncoding.EncodeToString(f.signing.Public().(ed25519.PublicKey)),
		NTPServers:   ntp,
		ClaimCertPEM: string(cc),
		ClaimKeyPEM:  string(ck),
	}
	return ff, ff.Validate()
}

// Open opens an existing fleet directory.
func Open(dir string) (*Fleet, error) {
	f := &Fleet{Dir: dir, Now: time.Now}
	var m meta
	b, err := os.ReadFile(f.path(metaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s is not a fleet directory (run `outpost fleet init` first)", dir)
	}
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		return nil, fmt.Errorf("fleet %s: %w", dir, err)
	}
	f.Name = m.Name
	f.OperatorURL = m.OperatorURL
	if f.ca, err = readCert(f.path(caCert)); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if f.caKey, err = readKey(f.path(caKey)); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	sk, err := readKey(f.path(signingKey))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	var ok bool
	if f.signing, ok = sk.(ed25519.PrivateKey); !ok {
		return nil, fmt.Errorf("fleet: signing key is %T, want Ed25519", sk)
	}
	return f, nil
}

func (f *Fleet) now() time.Time {
	if f.Now == nil {
		return time.Now()
	}
	return f.Now()
}

func (f *Fleet) path(name string) string { return filepath.Join(f.Dir, name) }

func (f *Fleet) writeJSON(name string, v any, perm os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(f.path(name), append(b, '\n'), perm)
}

// FleetFilePath is the fleet file to bake into images.
func (f *Fleet) FleetFilePath() string { return f.path(FleetFile) }

// CA returns the fleet CA certificate.
func (f *Fleet) CA() *x509.Certificate { return f.ca }

// CAPEM is the fleet CA certificate, PEM.
func (f *Fleet) CAPEM() []byte { return certPEM(f.ca.Raw) }

// OperatorCAFile is the CA of operator identities (the broker's operator
// listener trusts only it).
func (f *Fleet) OperatorCAFile() string { return f.path(operatorCACert) }

// ClientCAPool holds the CAs whose client certificates a broker accepts:
// the fleet CA (boxes, claim) and the operator CA.
func (f *Fleet) ClientCAPool() *x509.CertPool {
	p := f.CAPool()
	if c, err := readCert(f.path(operatorCACert)); err == nil {
		p.AddCert(c)
	}
	return p
}

// CAPool is a pool holding only the fleet CA.
func (f *Fleet) CAPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(f.ca)
	return p
}

// SigningKey is the fleet's Ed25519 key (commands, tokens, releases).
func (f *Fleet) SigningKey() ed25519.PrivateKey { return f.signing }

// Paths of the broker's and operator's credentials.
func (f *Fleet) BrokerCertFiles() (cert, key string) { return f.path(brokerCert), f.path(brokerKey) }
func (f *Fleet) OperatorCertFiles() (cert, key string) {
	return f.path(operatorCert), f.path(operatorKey)
}
func (f *Fleet) CAFile() string  { return f.path(caCert) }
func (f *Fleet) CRLFile() string { return f.path(crlFile) }

// Device is one box in the registry.
type Device struct {
	ID        string    `json:"id"`
	ClaimCode string    `json:"claim_code"`
	Group     string    `json:"group,omitempty"`
	Claimed   time.Time `json:"claimed"`
	// Serials of every certificate issued to the box (for revocation).
	Serials []string   `json:"serials"`
	Revoked *time.Time `json:"revoked,omitempty"`
	Board   string     `json:"board,omitempty"`
	Version string     `json:"version,omitempty"`
}

type registry struct {
	Devices map[string]*Device `json:"devices"`
}

func (f *Fleet) loadRegistry() (*registry, error) {
	r := &registry{Devices: map[string]*Device{}}
	b, err := os.ReadFile(f.path(registryFile))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%s: %w", registryFile, err)
	}
	if r.Devices == nil {
		r.Devices = map[string]*Device{}
	}
	return r, nil
}

// Devices lists the registry, sorted by id.
func (f *Fleet) Devices() ([]Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.loadRegistry()
	if err != nil {
		return nil, err
	}
	var out []Device
	for _, d := range r.Devices {
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Errors of enrolment decisions.
var (
	ErrClaimMismatch = errors.New("the request does not match the claim code")
	ErrRevoked       = errors.New("the device is revoked")
	ErrUnknown       = errors.New("no such device in the fleet")
)

// Enrol signs the certificate a box asks for when the operator claims it
// by code. The box's id and code are derived from its key, so a request
// whose key does not give both is refused: nobody can enrol as another box.
func (f *Fleet) Enrol(deviceID, claimCode string, csrDER []byte, group string) (certPEMChain []byte, err error) {
	pub, err := CheckEnrolRequest(deviceID, claimCode, csrDER)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.loadRegistry()
	if err != nil {
		return nil, err
	}
	if d := r.Devices[deviceID]; d != nil && d.Revoked != nil {
		return nil, ErrRevoked
	}
	der, err := f.issue(deviceID, pub, nil, true, DeviceCertValidity)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	d := r.Devices[deviceID]
	if d == nil {
		d = &Device{ID: deviceID, ClaimCode: identity.NormalizeClaimCode(claimCode), Claimed: f.now().UTC()}
		r.Devices[deviceID] = d
	}
	if group != "" {
		d.Group = group
	}
	d.Serials = append(d.Serials, leaf.SerialNumber.Text(16))
	if err := f.writeJSON(registryFile, r, 0o600); err != nil {
		return nil, err
	}
	return append(certPEM(der), certPEM(f.ca.Raw)...), nil
}

// CheckEnrolRequest verifies an enrolment request on its own: a signed
// certificate request naming deviceID, whose key gives both deviceID and
// claimCode. The operator checks each request as it arrives, so a forged
// one naming another box's code is dropped before anyone claims it.
func CheckEnrolRequest(deviceID, claimCode string, csrDER []byte) (*ecdsa.PublicKey, error) {
	csr, pub, err := checkCSR(csrDER)
	if err != nil {
		return nil, err
	}
	if csr.Subject.CommonName != deviceID || identity.DeviceIDFor(pub) != deviceID ||
		identity.ClaimCodeFor(pub) != identity.NormalizeClaimCode(claimCode) {
		return nil, ErrClaimMismatch
	}
	return pub, nil
}

// Renew signs a new certificate for an enrolled box, asked for over its
// authenticated connection (the broker's ACL proves the id). The key may be
// new; the id stays.
func (f *Fleet) Renew(deviceID string, csrDER []byte) ([]byte, error) {
	csr, pub, err := checkCSR(csrDER)
	if err != nil {
		return nil, err
	}
	if csr.Subject.CommonName != deviceID {
		return nil, fmt.Errorf("renew: csr names %q, not %q", csr.Subject.CommonName, deviceID)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.loadRegistry()
	if err != nil {
		return nil, err
	}
	d := r.Devices[deviceID]
	switch {
	case d == nil:
		return nil, ErrUnknown
	case d.Revoked != nil:
		return nil, ErrRevoked
	}
	der, err := f.issue(deviceID, pub, nil, true, DeviceCertValidity)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	d.Serials = append(d.Serials, leaf.SerialNumber.Text(16))
	if err := f.writeJSON(registryFile, r, 0o600); err != nil {
		return nil, err
	}
	return append(certPEM(der), certPEM(f.ca.Raw)...), nil
}

// Revoke marks a box revoked and puts every certificate it was issued on
// the CRL. The broker must reload the CRL and ACL to refuse it (mosquitto:
// ReloadMosquitto, a SIGHUP).
func (f *Fleet) Revoke(deviceID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.loadRegistry()
	if err != nil {
		return err
	}
	d := r.Devices[deviceID]
	if d == nil {
		return fmt.Errorf("%s: %w", deviceID, ErrUnknown)
	}
	if d.Revoked == nil {
		t := f.now().UTC()
		d.Revoked = &t
	}
	if err := f.writeJSON(registryFile, r, 0o600); err != nil {
		return err
	}
	return f.writeCRL(r)
}

// SetOperatorURL records where operator tools reach the broker.
func (f *Fleet) SetOperatorURL(u string) error {
	f.OperatorURL = u
	return f.writeJSON(metaFile, meta{Name: f.Name, OperatorURL: u}, 0o644)
}

// RevokedDevices lists the ids of revoked boxes, sorted.
func (f *Fleet) RevokedDevices() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.loadRegistry()
	if err != nil {
		return nil, err
	}
	var ids []string
	for id, d := range r.Devices {
		if d.Revoked != nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// IsEnrolled reports whether id is a box the fleet has enrolled.
func (f *Fleet) IsEnrolled(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.loadRegistry()
	return err == nil && r.Devices[id] != nil
}

// IsRevoked reports whether a certificate is on the fleet's revocation list.
func (f *Fleet) IsRevoked(cert *x509.Certificate) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, err := f.loadRegistry()
	if err != nil {
		return false, err
	}
	d := r.Devices[cert.Subject.CommonName]
	if d == nil || d.Revoked == nil {
		return false, nil
	}
	return slices.Contains(d.Serials, cert.SerialNumber.Text(16)), nil
}

func (f *Fleet) writeCRL(r *registry) error {
	var entries []x509.RevocationListEntry
	if r != nil {
		for _, d := range r.Devices {
			if d.Revoked == nil {
				continue
			}
			for _, s := range d.Serials {
				n, ok := new(big.Int).SetString(s, 16)
				if !ok {
					continue
				}
				entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: *d.Revoked})
			}
		}
	}
	now := f.now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(now.UnixNano()),
		ThisUpdate:                now.Add(-time.Hour),
		NextUpdate:                now.AddDate(1, 0, 0),
		RevokedCertificateEntries: entries,
	}, f.ca, f.caKey)
	if err != nil {
		return fmt.Errorf("crl: %w", err)
	}
	return atomicfile.WriteFile(f.path(crlFile), pemBlock("X509 CRL", der), 0o644)
}
