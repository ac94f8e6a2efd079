package operator

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/outpost-gw/outpost/cloudlink"
	"github.com/outpost-gw/outpost/cloudlink/identity"
	"github.com/outpost-gw/outpost/cloudlink/wire"
)

// request builds the enrolment request a box with key would send; name and
// code default to what the key gives.
func request(t *testing.T, key *ecdsa.PrivateKey, name, code string) *paho.Publish {
	t.Helper()
	if name == "" {
		name = identity.DeviceIDFor(&key.PublicKey)
	}
	if code == "" {
		code = identity.ClaimCodeFor(&key.PublicKey)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	env, err := wire.New(wire.TypeEnrolRequest, time.Now(), wire.EnrolRequest{DeviceID: name, ClaimCode: code, CSR: csr, Board: "t", Version: "t"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := wire.Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	return &paho.Publish{Topic: cloudlink.TopicRoot + "/enrol/" + name + "/request", Payload: b}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestEnrolRequestsChecked: a request whose key does not give the id and
// claim code it states (a forgery naming a real box's code) is dropped on
// arrival; a code that several valid requests share is refused, not
// claimed at random.
func TestEnrolRequestsChecked(t *testing.T) {
	op := &Operator{log: slog.New(slog.DiscardHandler), requests: map[string]wire.EnrolRequest{}, waiters: map[wire.ID]chan wire.CommandResult{}}
	real, rogue := newKey(t), newKey(t)
	realCode := identity.ClaimCodeFor(&real.PublicKey)

	op.receive(request(t, rogue, "", realCode))                                    // rogue key, the real box's code
	op.receive(request(t, rogue, identity.DeviceIDFor(&real.PublicKey), realCode)) // and its id too
	if p := op.Pending(); len(p) != 0 {
		t.Fatalf("forged requests kept: %v", p)
	}
	op.receive(request(t, real, "", ""))
	if p := op.Pending(); len(p) != 1 || p[identity.DeviceIDFor(&real.PublicKey)] != realCode {
		t.Fatalf("the real request: %v", p)
	}

	// Two valid requests with one code (as if a key had been ground to
	// match): refused. Planted directly, since grinding takes 2^40 keys.
	other := newKey(t)
	r2 := wire.EnrolRequest{DeviceID: identity.DeviceIDFor(&other.PublicKey), ClaimCode: realCode}
	op.requests[r2.DeviceID] = r2
	if _, err := op.Claim(context.Background(), realCode, "", 0); !errors.Is(err, ErrAmbiguousClaim) {
		t.Fatalf("ambiguous claim: %v", err)
	}
}
