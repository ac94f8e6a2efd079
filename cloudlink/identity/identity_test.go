package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// sign plays the fleet CA for tests.
func sign(t *testing.T, csrDER []byte, cn string) []byte {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("bad csr: %v", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, csr.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestLifecycle(t *testing.T) {
	dir := t.TempDir()
	id, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^op-[0-9a-z]{16}$`).MatchString(id.DeviceID()) {
		t.Errorf("device id %q", id.DeviceID())
	}
	if !regexp.MustCompile(`^[0-9A-Z]{4}-[0-9A-Z]{4}$`).MatchString(id.ClaimCode()) {
		t.Errorf("claim code %q", id.ClaimCode())
	}
	if st, _ := os.Stat(filepath.Join(dir, PEMFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", st.Mode().Perm())
	}
	if _, err := id.TLSCertificate(); err != ErrNoCertificate || id.Enrolled() {
		t.Errorf("before enrolment: %v", err)
	}
	csr, err := id.CSR(id.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := id.SetCertificate(sign(t, csr, "op-someoneelse00000")); err == nil {
		t.Error("accepted a certificate for another device")
	}
	if err := id.SetCertificate(sign(t, csr, id.DeviceID())); err != nil {
		t.Fatal(err)
	}

	id2, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if id2.DeviceID() != id.DeviceID() || !id2.Enrolled() || !id2.Key.Equal(id.Key) {
		t.Fatal("identity not kept across reload")
	}
	if _, err := id2.TLSCertificate(); err != nil {
		t.Fatal(err)
	}

	// Renewal with a new key keeps the name.
	newKey, _ := NewKey()
	csr2, _ := id2.CSR(newKey)
	if err := id2.Install(newKey, sign(t, csr, id.DeviceID())); err == nil {
		t.Error("installed a certificate for the old key with the new key")
	}
	if err := id2.Install(newKey, sign(t, csr2, id.DeviceID())); err != nil {
		t.Fatal(err)
	}
	id3, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if id3.DeviceID() != id.DeviceID() || id3.ClaimCode() != id.ClaimCode() || !id3.Key.Equal(newKey) {
		t.Error("renewal changed the name or did not keep the new key")
	}
	if !id3.NeedsRenewal(time.Now().Add(8*24*time.Hour), 7*24*time.Hour) || id3.NeedsRenewal(time.Now(), 7*24*time.Hour) {
		t.Error("NeedsRenewal wrong")
	}
}

func TestCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, PEMFile), []byte("garbage"), 0o600)
	if _, err := LoadOrCreate(dir); err == nil {
		t.Error("garbage key accepted")
	}
}

func TestNormalizeClaimCode(t *testing.T) {
	for in, want := range map[string]string{
		"abcd-efgh": "ABCD-EFGH", "abcdefgh": "ABCD-EFGH", "o1il ab2c": "0111-AB2C", "x": "X",
	} {
		if got := NormalizeClaimCode(in); got != want {
			t.Errorf("NormalizeClaimCode(%q) = %q, want %q", in, got, want)
		}
	}
}
