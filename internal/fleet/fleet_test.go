package fleet

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-gw/outpost/cloudlink/identity"
	"github.com/outpost-gw/outpost/internal/config"
)

func newFleet(t *testing.T) *Fleet {
	t.Helper()
	f, err := Init(filepath.Join(t.TempDir(), "fleet"), InitOptions{
		Name: "acme", BrokerURL: "mqtts://127.0.0.1:8883", BrokerHosts: []string{"127.0.0.1", "localhost"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func leaf(t *testing.T, chain []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(chain)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestInitOpen(t *testing.T) {
	f := newFleet(t)
	if _, err := Init(f.Dir, InitOptions{Name: "x", BrokerURL: "mqtts://b"}); !errors.Is(err, ErrExists) {
		t.Errorf("second Init: %v", err)
	}
	for _, k := range []string{caKey, signingKey, claimKey, brokerKey, operatorKey, FleetFile} {
		if st, err := os.Stat(f.path(k)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v mode %v, want 0600", k, err, st.Mode().Perm())
		}
	}
	ff, err := config.LoadFleet(f.FleetFilePath())
	if err != nil {
		t.Fatalf("fleet file does not load: %v", err)
	}
	if ff.Name != "acme" || ff.ClaimCertPEM == "" || ff.PublicKey == "" || ff.CAPEM == "" {
		t.Errorf("fleet file %+v", ff)
	}
	g, err := Open(f.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if g.Name != "acme" || !g.CA().Equal(f.CA()) || !g.SigningKey().Equal(f.SigningKey()) {
		t.Error("Open does not give back the fleet")
	}
	if _, err := Open(t.TempDir()); err == nil || !strings.Contains(err.Error(), "fleet init") {
		t.Errorf("Open(empty) = %v", err)
	}
}

func TestEnrolRenewRevoke(t *testing.T) {
	f := newFleet(t)
	id, _ := identity.LoadOrCreate(t.TempDir())
	other, _ := identity.LoadOrCreate(t.TempDir())
	csr, _ := id.CSR(id.Key)
	otherCSR, _ := other.CSR(other.Key)

	for _, tc := range []struct {
		name, dev, code string
		csr             []byte
	}{
		{"wrong code", id.DeviceID(), other.ClaimCode(), csr},
		{"someone else's key under my id", id.DeviceID(), id.ClaimCode(), otherCSR},
		{"garbage csr", id.DeviceID(), id.ClaimCode(), []byte("nope")},
	} {
		if _, err := f.Enrol(tc.dev, tc.code, tc.csr, ""); err == nil {
			t.Errorf("%s: enrolled", tc.name)
		}
	}
	chain, err := f.Enrol(id.DeviceID(), strings.ToLower(id.ClaimCode()), csr, "lobby")
	if err != nil {
		t.Fatal(err)
	}
	if err := id.SetCertificate(chain); err != nil {
		t.Fatal(err)
	}
	c := id.Cert
	if _, err := c.Verify(x509.VerifyOptions{Roots: f.CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("device certificate does not verify: %v", err)
	}
	newKey, _ := identity.NewKey()
	csr2, _ := id.CSR(newKey)
	chain2, err := f.Renew(id.DeviceID(), csr2)
	if err != nil {
		t.Fatal(err)
	}
	if err := id.Install(newKey, chain2); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Renew(other.DeviceID(), otherCSR); !errors.Is(err, ErrUnknown) {
		t.Errorf("renew unknown: %v", err)
	}
	devs, _ := f.Devices()
	if len(devs) != 1 || devs[0].Group != "lobby" || len(devs[0].Serials) != 2 {
		t.Errorf("registry %+v", devs)
	}

	if err := f.Revoke(id.DeviceID()); err != nil {
		t.Fatal(err)
	}
	for _, cert := range []*x509.Certificate{c, leaf(t, chain2)} {
		if r, err := f.IsRevoked(cert); !r || err != nil {
			t.Errorf("certificate %v not revoked: %v", cert.SerialNumber, err)
		}
	}
	b, _ := os.ReadFile(f.CRLFile())
	blk, _ := pem.Decode(b)
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil || crl.CheckSignatureFrom(f.CA()) != nil || len(crl.RevokedCertificateEntries) != 2 {
		t.Errorf("CRL: %v, %d entries", err, len(crl.RevokedCertificateEntries))
	}
	if _, err := f.Renew(id.DeviceID(), csr2); !errors.Is(err, ErrRevoked) {
		t.Errorf("renew after revoke: %v", err)
	}
	if _, err := f.Enrol(id.DeviceID(), id.ClaimCode(), csr, ""); !errors.Is(err, ErrRevoked) {
		t.Errorf("enrol after revoke: %v", err)
	}
}

func TestMosquittoConfig(t *testing.T) {
	f := newFleet(t)
	p, err := f.WriteMosquittoConfig(MosquittoOptions{Dir: t.TempDir(), Address: "127.0.0.1", Port: 18883})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	for _, want := range []string{"require_certificate true", "use_identity_as_username true", "crlfile ", "acl_file ", "listener 18883 127.0.0.1"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("mosquitto.conf lacks %q", want)
		}
	}
}
