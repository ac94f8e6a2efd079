package cloudlink_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/cloudlink"
	"github.com/outpost-gw/outpost/cloudlink/identity"
	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/internal/testutil/fleettest"
)

// fleetBroker is a fleet with the embedded broker enforcing its rules.
func fleetBroker(t *testing.T) (*fleet.Fleet, *url.URL) { return fleettest.Start(t) }

type box struct {
	id   *identity.Identity
	ob   *outbox.Outbox
	link *cloudlink.Link
	stop context.CancelFunc
	done chan struct{}
}

// enrolBox makes a box, has the operator claim it by its code, and starts
// its link with its own certificate.
func enrolBox(t *testing.T, f *fleet.Fleet, u *url.URL, op *operator.Operator) *box {
	t.Helper()
	ff, err := config.LoadFleet(f.FleetFilePath())
	if err != nil {
		t.Fatal(err)
	}
	claim, err := tls.X509KeyPair([]byte(ff.ClaimCertPEM), []byte(ff.ClaimKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	enr := &cloudlink.Enroller{Identity: id, BrokerURL: u, RootCAs: f.CAPool(), Claim: claim, Board: "test", Version: "v0", MinBackoff: 50 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- enr.Run(ctx) }()
	dev, err := op.Claim(ctx, id.ClaimCode(), "lobby", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if dev != id.DeviceID() {
		t.Fatalf("claimed %s, want %s", dev, id.DeviceID())
	}
	if err := <-errc; err != nil {
		t.Fatalf("enrolment: %v", err)
	}
	st, err := store.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ob, _ := outbox.Open(st, outbox.Options{})
	l, err := cloudlink.New(cloudlink.Config{
		DeviceID: id.DeviceID(), BrokerURL: u, RootCAs: f.CAPool(),
		Certificate: id.TLSCertificate, Outbox: ob,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, RevokedBackoff: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	lctx, lcancel := context.WithCancel(context.Background())
	b := &box{id: id, ob: ob, link: l, stop: lcancel, done: make(chan struct{})}
	go func() { l.Run(lctx); close(b.done) }()
	t.Cleanup(func() { lcancel(); <-b.done; st.Close() })
	return b
}

func waitState(t *testing.T, l *cloudlink.Link, want cloudlink.State) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for l.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("link state %s, want %s (last error %q)", l.State(), want, l.Stats().LastError)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEnrolClaimRevoke(t *testing.T) {
	f, u := fleetBroker(t)
	op, err := operator.Connect(context.Background(), f, operator.Options{BrokerURL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	msgs := make(chan operator.Message, 100)
	op.Subscribe(func(m operator.Message) { msgs <- m })

	a := enrolBox(t, f, u, op)
	waitState(t, a.link, cloudlink.StateOnline)
	ev, _ := wire.New(wire.TypeEvent, time.Now(), wire.Event{Kind: "hello", Severity: "info", Message: "from A"})
	b, _ := wire.Encode(ev)
	a.ob.Append(context.Background(), outbox.StreamEvent, b)
	deadline := time.After(10 * time.Second)
	for got := false; !got; {
		select {
		case m := <-msgs:
			got = m.Device == a.id.DeviceID() && m.Stream == "event" && m.Env.ID == ev.ID
		case <-deadline:
			t.Fatal("operator did not receive the box's event")
		}
	}
	r, err := op.Command(context.Background(), a.id.DeviceID(), "ping", nil, 5*time.Second)
	if err != nil || r.OK || r.Error == "" { // no handler in this box: a clear refusal
		t.Logf("command result %+v %v", r, err)
	}

	// Revoke A: the broker refuses it at the next connection, and the box
	// says so instead of retrying every second.
	if err := f.Revoke(a.id.DeviceID()); err != nil {
		t.Fatal(err)
	}
	a.stop()
	<-a.done
	l2, _ := cloudlink.New(cloudlink.Config{
		DeviceID: a.id.DeviceID(), BrokerURL: u, RootCAs: f.CAPool(), Certificate: a.id.TLSCertificate, Outbox: a.ob,
		MinBackoff: 50 * time.Millisecond, RevokedBackoff: time.Hour,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l2.Run(ctx); close(done) }()
	waitState(t, l2, cloudlink.StateRevoked)
	time.Sleep(500 * time.Millisecond)
	if s := l2.Stats(); s.Connects != 0 {
		t.Errorf("revoked box connected: %+v", s)
	}
	cancel()
	<-done
}

func TestClaimWrongCode(t *testing.T) {
	f, u := fleetBroker(t)
	op, err := operator.Connect(context.Background(), f, operator.Options{BrokerURL: u})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	if _, err := op.Claim(context.Background(), "ZZZZ-ZZZZ", "", 300*time.Millisecond); !errors.Is(err, operator.ErrNoSuchClaim) {
		t.Fatalf("claim of an unknown code: %v", err)
	}
}
