// Package broker is an embedded MQTT v5 broker (mochi-mqtt) for the demo and
// for tests that must run without anything installed. It enforces the same
// rules as the fleet's mosquitto configuration (internal/fleet): TLS with a
// fleet client certificate whose CN is the username, the same topic ACL,
// and refusal of revoked certificates. A plain listener without TLS or ACL
// can be added for unit tests.
package broker

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Options configure the broker.
type Options struct {
	// TLSAddr, with TLS set, is the mTLS listener address (e.g. 127.0.0.1:0).
	TLSAddr string
	TLS     *tls.Config
	// WSSAddr, with TLS set, is an optional MQTT-over-WebSocket listener
	// (wss://WSSAddr/mqtt, the boxes' port-443 path) with the same TLS
	// config, client certificates and rules as the mTLS listener.
	WSSAddr string
	// IsRevoked refuses a client certificate at connect.
	IsRevoked func(*x509.Certificate) (bool, error)
	// IsEnrolled says whether a device id belongs to an enrolled box: the
	// claim credential may not use such a client id (it would take over the
	// box's session).
	IsEnrolled func(id string) bool
	// PlainAddr is an optional listener without TLS and without ACL
	// (loopback tests only).
	PlainAddr string
	Log       *slog.Logger
}

// Broker is a running embedded broker.
type Broker struct {
	srv       *mqtt.Server
	tlsAddr   string
	wssAddr   string
	plainAddr string
}

// Start starts the broker with the listeners in o.
func Start(o Options) (*Broker, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumSessionExpiryInterval = 7 * 24 * 3600
	caps.MaximumMessageExpiryInterval = 7 * 24 * 3600
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: o.Log, Capabilities: caps})
	b := &Broker{srv: srv}
	if err := srv.AddHook(&fleetHook{srv: srv, isRevoked: o.IsRevoked, isEnrolled: o.IsEnrolled, log: o.Log}, nil); err != nil {
		return nil, err
	}
	if o.TLSAddr != "" {
		l := listeners.NewTCP(listeners.Config{ID: "mqtts", Address: o.TLSAddr, TLSConfig: o.TLS})
		if err := srv.AddListener(l); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		b.tlsAddr = l.Address()
	}
	if o.WSSAddr != "" {
		if o.TLS == nil {
			return nil, fmt.Errorf("broker: a WebSocket listener needs TLS")
		}
		l, err := newWSS("wss", o.WSSAddr, o.TLS)
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		if err := srv.AddListener(l); err != nil {
			l.ln.Close()
			return nil, fmt.Errorf("broker: %w", err)
		}
		b.wssAddr = l.Address()
	}
	if o.PlainAddr != "" {
		l := listeners.NewTCP(listeners.Config{ID: "plain", Address: o.PlainAddr})
		if err := srv.AddListener(l); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		b.plainAddr = l.Address()
	}
	go srv.Serve()
	return b, nil
}

// TLSAddr is the bound mTLS address.
func (b *Broker) TLSAddr() string { return b.tlsAddr }

// PlainAddr is the bound plain address.
func (b *Broker) PlainAddr() string { return b.plainAddr }

// Close stops the broker.
func (b *Broker) Close() error { return b.srv.Close() }

// fleetHook authenticates by client certificate and applies the ACL.
type fleetHook struct {
	mqtt.HookBase
	srv        *mqtt.Server
	isRevoked  func(*x509.Certificate) (bool, error)
	isEnrolled func(string) bool
	log        *slog.Logger
}

func (h *fleetHook) ID() string { return "outpost-fleet" }

func (h *fleetHook) Provides(b byte) bool {
	return b == mqtt.OnConnect || b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

// OnConnect answers a revoked certificate with CONNACK "banned" (0x8A), so
// the box can tell revocation from other refusals. (mosquitto refuses it
// earlier, in TLS, with the certificate_revoked alert.)
func (h *fleetHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	c := peer(cl)
	if c == nil || h.isRevoked == nil {
		return nil
	}
	if r, err := h.isRevoked(c); err != nil || r {
		h.log.Warn("broker: refused a revoked certificate", "cn", c.Subject.CommonName, "err", err)
		h.srv.SendConnack(cl, packets.ErrBanned, false, nil)
		return packets.ErrBanned
	}
	return nil
}

func peer(cl *mqtt.Client) *x509.Certificate {
	// *tls.Conn on the mTLS listener, *wsConn on the WebSocket one.
	tc, ok := cl.Net.Conn.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return nil
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil
	}
	return certs[0]
}

// OnConnectAuthenticate lets in clients of the plain listener and, on the
// TLS listener, holders of an unrevoked fleet certificate (the TLS config
// already verified the chain).
func (h *fleetHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if cl.Net.Listener == "plain" || cl.Net.Inline {
		return true
	}
	c := peer(cl)
	if c == nil {
		return false
	}
	cn := c.Subject.CommonName
	// The client id names the MQTT session: bind it to the certificate, so
	// nobody resumes (and reads) another's session.
	switch {
	case cn == "operator":
		if !strings.HasPrefix(cl.ID, "operator") && !strings.HasPrefix(cl.ID, "outpost-fleet") {
			return false
		}
	case cn == "claim":
		// Enrolment uses the box's future id; never an enrolled box's.
		if !strings.HasPrefix(cl.ID, "op-") || h.isEnrolled != nil && h.isEnrolled(cl.ID) {
			h.log.Warn("broker: claim credential refused for client id", "client_id", cl.ID)
			return false
		}
	case cl.ID != cn:
		h.log.Warn("broker: client id does not match the certificate", "cn", cn, "client_id", cl.ID)
		return false
	}
	cl.Properties.Username = []byte(cn)
	return true
}

// OnACLCheck mirrors fleet.ACL().
func (h *fleetHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Listener == "plain" || cl.Net.Inline {
		return true
	}
	return Allowed(string(cl.Properties.Username), cl.ID, topic, write)
}

// Allowed is the fleet's topic ACL: the operator may do anything under
// outpost/, anyone may ask to be enrolled under its own client id, and a
// box may publish below outpost/v1/{its CN}/up/ and read below .../down/.
func Allowed(user, clientID, topic string, write bool) bool {
	if user == "operator" {
		return strings.HasPrefix(topic, "outpost/")
	}
	if strings.ContainsAny(clientID, "/+#") || strings.ContainsAny(user, "/+#") {
		return false
	}
	enrol := "outpost/v1/enrol/" + clientID + "/"
	if write && topic == enrol+"request" || !write && topic == enrol+"response" {
		return true
	}
	if user == "" || user == "claim" {
		return false
	}
	own := "outpost/v1/" + user + "/"
	if write {
		return strings.HasPrefix(topic, own+"up/") && !strings.ContainsAny(topic, "+#")
	}
	return strings.HasPrefix(topic, own+"down/")
}

// FleetTLS is the broker side of the fleet's mTLS: the fleet's broker
// certificate, client certificates required and checked against the fleet CA.
type FleetTLS interface {
	BrokerCertFiles() (cert, key string)
	CAPool() *x509.CertPool
	ClientCAPool() *x509.CertPool
	IsRevoked(*x509.Certificate) (bool, error)
	IsEnrolled(id string) bool
}

// StartFleet starts a broker that enforces a fleet's rules on one mTLS
// listener at addr (e.g. 127.0.0.1:0): the demo's broker and the tests'.
func StartFleet(f FleetTLS, addr string, log *slog.Logger) (*Broker, error) {
	o, err := FleetOptions(f, addr, log)
	if err != nil {
		return nil, err
	}
	return Start(o)
}

// FleetOptions are the Options StartFleet uses, for a caller that adds a
// listener (e.g. WSSAddr) before Start.
func FleetOptions(f FleetTLS, addr string, log *slog.Logger) (Options, error) {
	cf, kf := f.BrokerCertFiles()
	cert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		return Options{}, fmt.Errorf("broker: %w", err)
	}
	return Options{
		TLSAddr: addr,
		TLS: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientCAs:    f.ClientCAPool(),
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		},
		IsRevoked:  f.IsRevoked,
		IsEnrolled: f.IsEnrolled,
		Log:        log,
	}, nil
}

// URL is the mqtts:// URL of the TLS listener.
func (b *Broker) URL() *url.URL { return &url.URL{Scheme: "mqtts", Host: b.tlsAddr} }

// WSSURL is the wss://…/mqtt URL of the WebSocket listener, nil without one.
func (b *Broker) WSSURL() *url.URL {
	if b.wssAddr == "" {
		return nil
	}
	return &url.URL{Scheme: "wss", Host: b.wssAddr, Path: wssPath}
}
