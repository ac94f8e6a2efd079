package cloudlink

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/outpost-gw/outpost/cloudlink/identity"
	"github.com/outpost-gw/outpost/cloudlink/wire"
)

// EnrolRequestTopic and EnrolResponseTopic are where a box asks for its
// certificate and where the fleet answers (retained, so a box that was
// offline when the operator claimed it still gets the answer).
func EnrolRequestTopic(device string) string  { return TopicRoot + "/enrol/" + device + "/request" }
func EnrolResponseTopic(device string) string { return TopicRoot + "/enrol/" + device + "/response" }

// Enroller gets a box its own certificate. It connects with the fleet's
// claim credential (which the broker allows nothing but this), publishes a
// retained request carrying a CSR, and waits until the operator claims the
// box by its claim code (`outpost fleet claim CODE`) and the answer arrives.
type Enroller struct {
	Identity  *identity.Identity
	BrokerURL *url.URL
	RootCAs   *x509.CertPool
	Claim     tls.Certificate
	Proxy     *url.URL
	Board     string
	Version   string
	Log       *slog.Logger
	Now       func() time.Time
	ClockSet  func() bool
	// Repeat re-publishes the request this often (default 10 min).
	Repeat time.Duration
	// MinBackoff/MaxBackoff bound reconnect waits (defaults 1 s, 5 min).
	MinBackoff, MaxBackoff time.Duration
}

// ErrEnrolRefused wraps the fleet's reason for refusing a request.
var ErrEnrolRefused = errors.New("the fleet refused to enrol this box")

// Run returns nil once the box holds a certificate, or ctx's error. A
// refusal from the fleet is logged and the request sent again: it may
// answer a request someone else forged under this box's id.
func (e *Enroller) Run(ctx context.Context) error {
	if e.Identity.Enrolled() {
		return nil
	}
	if e.Log == nil {
		e.Log = slog.New(slog.DiscardHandler)
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.ClockSet == nil {
		e.ClockSet = func() bool { return e.Now().Year() >= 2025 }
	}
	if e.Repeat == 0 {
		e.Repeat = 10 * time.Minute
	}
	dev := e.Identity.DeviceID()
	key := e.Identity.Key
	csr, err := e.Identity.CSR(key)
	if err != nil {
		return err
	}
	req, err := wire.New(wire.TypeEnrolRequest, e.Now(), wire.EnrolRequest{
		DeviceID: dev, ClaimCode: e.Identity.ClaimCode(), CSR: csr, Board: orUnknown(e.Board), Version: orUnknown(e.Version),
	})
	if err != nil {
		return err
	}
	reqBytes, err := wire.Encode(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var once sync.Once
	var result error
	finish := func(err error) { once.Do(func() { result = err; cancel() }) }
	askAgain := make(chan struct{}, 1)

	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{e.BrokerURL},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		ReconnectBackoff:              growingBackoff(orDur(e.MinBackoff, time.Second), orDur(e.MaxBackoff, 5*time.Minute)),
		AttemptConnection: func(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
			if !e.ClockSet() {
				return nil, ErrClockUnset
			}
			d := &Dialer{TLS: &tls.Config{RootCAs: e.RootCAs, Certificates: []tls.Certificate{e.Claim}, Time: e.Now}, Proxy: e.Proxy}
			return d.Dial(ctx, u)
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				if _, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: EnrolResponseTopic(dev), QoS: 1}}}); err != nil {
					e.Log.Warn("enrolment: subscribe failed", "err", err)
					return
				}
				for ctx.Err() == nil {
					if _, err := cm.Publish(ctx, &paho.Publish{Topic: EnrolRequestTopic(dev), QoS: 1, Retain: true, Payload: reqBytes}); err != nil {
						return
					}
					e.Log.Info("enrolment: asked the fleet; waiting to be claimed", "device", dev, "claim_code", e.Identity.ClaimCode())
					select {
					case <-ctx.Done():
					case <-time.After(e.Repeat):
					case <-askAgain:
					}
				}
			}()
		},
		OnConnectError: func(err error) { e.Log.Warn("enrolment: connection attempt failed", "err", err) },
		ClientConfig: paho.ClientConfig{
			ClientID: dev,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				if pr.Packet.Topic != EnrolResponseTopic(dev) || len(pr.Packet.Payload) == 0 {
					return true, nil
				}
				if err := e.answer(pr.Packet.Payload, key); err != nil {
					if errors.Is(err, ErrEnrolRefused) {
						// Not final: anyone holding the claim credential can
						// publish a request under this box's id, and the
						// fleet's refusal of that one arrives here too. Ask
						// again with this box's own request.
						e.Log.Warn("enrolment: the fleet refused a request under this box's id; asking again", "err", err)
						select {
						case askAgain <- struct{}{}:
						default:
						}
					} else {
						e.Log.Warn("enrolment: ignored a bad answer", "err", err)
					}
					return true, nil
				}
				finish(nil)
				return true, nil
			}},
		},
	})
	if err != nil {
		return fmt.Errorf("enrolment: %w", err)
	}
	<-ctx.Done()
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer dcancel()
	cm.Disconnect(dctx)
	if result == nil && !e.Identity.Enrolled() {
		return ctx.Err()
	}
	return result
}

func (e *Enroller) answer(payload []byte, key *ecdsa.PrivateKey) error {
	env, err := wire.Decode(payload, wire.DefaultLimits())
	if err != nil {
		return err
	}
	var r wire.EnrolResponse
	if env.Type != wire.TypeEnrolResponse {
		return fmt.Errorf("unexpected %s on the enrolment topic", env.Type)
	}
	if err := wire.DecodeBody(env, &r, wire.DefaultLimits()); err != nil {
		return err
	}
	if r.DeviceID != e.Identity.DeviceID() {
		return fmt.Errorf("answer for %s", r.DeviceID)
	}
	if r.Error != "" {
		return fmt.Errorf("%w: %s", ErrEnrolRefused, r.Error)
	}
	if err := e.Identity.Install(key, r.CertPEM); err != nil {
		return err
	}
	e.Log.Info("enrolment: the fleet signed this box's certificate", "device", r.DeviceID, "not_after", e.Identity.Cert.NotAfter)
	return nil
}

// growingBackoff grows with every connection the enroller makes, failed or
// dropped, and never resets: the claim credential is shared by every image,
// and on mosquitto (use_username_as_clientid) boxes enrolling at the same
// time take over each other's "claim" session. A backoff that reset on each
// success would make them take turns kicking each other every second; this
// one spreads them out, and each gets the retained answer at its next
// connection. The first connection is immediate.
func growingBackoff(lo, hi time.Duration) func(int) time.Duration {
	var n atomic.Int64
	b := expBackoff(lo, hi)
	return func(int) time.Duration { return b(int(n.Add(1) - 1)) }
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func orDur(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
