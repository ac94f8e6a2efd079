package integration

// Tests of the cloud link, enrolment and the fleet's broker configuration
// against a real mosquitto (Debian's 2.0.11 in CI), configured by
// fleet.WriteMosquittoConfig. Every identifier of this file starts with
// "mosq" (or names a mosquitto test), so other files of the package are free
// to use short names.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/outpost-gw/outpost/cloudlink"
	"github.com/outpost-gw/outpost/cloudlink/identity"
	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/internal/testutil/connectproxy"
)

// ---------------------------------------------------------------------------
// A real mosquitto

// mosqBroker is a real mosquitto process serving one fleet on a loopback
// port, with the configuration fleet.WriteMosquittoConfig writes and its
// persistence in a test directory. It can be stopped (SIGTERM or SIGKILL) and
// started again on the same port with the same persistence; the test's
// cleanup kills it, and it dies with the test binary (Pdeathsig).
type mosqBroker struct {
	t     *testing.T
	f     *fleet.Fleet
	conf  string
	dir   string
	URL   *url.URL // mqtts://127.0.0.1:PORT, the boxes' listener
	OpURL *url.URL // the operator's listener (operator CA only)

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *os.File      // stdout and stderr of every run, appended
}

// mosqStart writes the fleet's mosquitto configuration for
// 127.0.0.1:<free port> and starts the broker.
func mosqStart(t *testing.T, f *fleet.Fleet) *mosqBroker {
	t.Helper()
	requireTools(t, "mosquitto")
	dir := filepath.Join(t.TempDir(), "mosquitto")
	port, opPort := freePort(t), freePort(t)
	conf, err := f.WriteMosquittoConfig(fleet.MosquittoOptions{Dir: dir, Address: "127.0.0.1", Port: port, OperatorPort: opPort})
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// Started as root, mosquitto drops to the "mosquitto" user, which
		// cannot read the fleet's 0600 keys in 0700 test directories (it
		// exits: "Unable to open acl_file"). Tests only: stay root.
		fh, err := os.OpenFile(conf, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(fh, "user root")
		fh.Close()
	}
	lf, err := os.OpenFile(filepath.Join(dir, "mosquitto.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	m := &mosqBroker{t: t, f: f, conf: conf, dir: dir, log: lf,
		URL:   &url.URL{Scheme: "mqtts", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))},
		OpURL: &url.URL{Scheme: "mqtts", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(opPort))}}
	t.Cleanup(func() {
		m.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("mosquitto log (end):\n%s", m.logTail(6000))
		}
		lf.Close()
	})
	m.start()
	return m
}

// start runs mosquitto and waits until its port completes a TLS handshake.
func (m *mosqBroker) start() {
	m.t.Helper()
	m.mu.Lock()
	if m.cmd != nil {
		m.mu.Unlock()
		m.t.Fatal("mosquitto: already running")
	}
	fmt.Fprintf(m.log, "---- %s test: starting mosquitto -c %s\n", time.Now().Format(time.StampMicro), m.conf)
	cmd := exec.Command("mosquitto", "-c", m.conf)
	cmd.Stdout, cmd.Stderr = m.log, m.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		m.mu.Unlock()
		m.t.Fatalf("mosquitto: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()

	deadline := time.Now().Add(15 * time.Second)
	for {
		err := m.probeTLS()
		if err == nil {
			return
		}
		select {
		case <-done:
			m.t.Fatalf("mosquitto exited at start (%v):\n%s", cmd.ProcessState, m.logTail(3000))
		default:
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("mosquitto not accepting TLS on %s after 15 s: %v\n%s", m.URL.Host, err, m.logTail(3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// probeTLS completes a TLS handshake with the operator's certificate.
func (m *mosqBroker) probeTLS() error {
	cf, kf := m.f.OperatorCertFiles()
	cert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		return err
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", m.URL.Host, &tls.Config{
		RootCAs: m.f.CAPool(), Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1",
	})
	if err != nil {
		return err
	}
	return c.Close()
}

// stop sends sig (SIGTERM: orderly shutdown that saves the persistence file;
// SIGKILL: a crash) and waits until the process is gone. It does nothing when
// the broker is not running.
func (m *mosqBroker) stop(sig syscall.Signal) {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd, m.done = nil, nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	fmt.Fprintf(m.log, "---- %s test: sending %v\n", time.Now().Format(time.StampMicro), sig)
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		m.t.Errorf("mosquitto ignored %v for 10 s; killed", sig)
	}
}

// restart stops the broker with sig and starts it again on the same port with
// the same persistence; it reads the CRL again.
func (m *mosqBroker) restart(sig syscall.Signal) {
	m.t.Helper()
	m.stop(sig)
	m.start()
}

func (m *mosqBroker) logText() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "mosquitto.log"))
	return string(b)
}

func (m *mosqBroker) logTail(n int) string {
	s := strings.TrimSpace(m.logText())
	if len(s) > n {
		s = "...\n" + s[len(s)-n:]
	}
	return s
}

// logLines counts the log lines containing every one of parts.
func (m *mosqBroker) logLines(parts ...string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(m.logText()))
next:
	for sc.Scan() {
		for _, p := range parts {
			if !strings.Contains(sc.Text(), p) {
				continue next
			}
		}
		n++
	}
	return n
}

// ---------------------------------------------------------------------------
// Fleet, boxes, operator

func mosqFleet(t *testing.T, name string) *fleet.Fleet {
	t.Helper()
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{
		Name: name, BrokerURL: "mqtts://127.0.0.1:8883", BrokerHosts: []string{"127.0.0.1", "localhost"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// mosqClaimCert is the fleet's claim credential, as every image carries it.
func mosqClaimCert(t *testing.T, f *fleet.Fleet) tls.Certificate {
	t.Helper()
	ff, err := config.LoadFleet(f.FleetFilePath())
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair([]byte(ff.ClaimCertPEM), []byte(ff.ClaimKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mosqOperatorCert(t *testing.T, f *fleet.Fleet) tls.Certificate {
	t.Helper()
	cf, kf := f.OperatorCertFiles()
	c, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mosqInbox records what the operator receives from boxes.
type mosqInbox struct {
	mu   sync.Mutex
	msgs []operator.Message
}

// mosqOperator connects the fleet operator to the broker at u and records
// what boxes send.
func mosqOperator(t *testing.T, f *fleet.Fleet, u *url.URL, o operator.Options) (*operator.Operator, *mosqInbox) {
	t.Helper()
	o.BrokerURL = u
	// The context bounds the connection's whole life, not just the connect
	// (operator.Connect gives up by itself after 15 s).
	op, err := operator.Connect(context.Background(), f, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Close() })
	in := &mosqInbox{}
	op.Subscribe(func(m operator.Message) {
		in.mu.Lock()
		in.msgs = append(in.msgs, m)
		in.mu.Unlock()
	})
	return op, in
}

func (in *mosqInbox) find(pred func(operator.Message) bool) (operator.Message, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, m := range in.msgs {
		if pred(m) {
			return m, true
		}
	}
	return operator.Message{}, false
}

// waitFor waits up to 15 s for a message matching pred.
func (in *mosqInbox) waitFor(t *testing.T, what string, pred func(operator.Message) bool) operator.Message {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if m, ok := in.find(pred); ok {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("the operator did not receive %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mosqBox is an enrolled box: its identity, store and outbox.
type mosqBox struct {
	id *identity.Identity
	st *store.Store
	ob *outbox.Outbox
}

func (b *mosqBox) ID() string { return b.id.DeviceID() }

// mosqEnrol makes a new box that asks to be enrolled through the broker at u
// with the fleet's claim credential, has the operator claim it by its claim
// code, and waits until the box holds its own fleet-signed certificate.
func mosqEnrol(t *testing.T, f *fleet.Fleet, u *url.URL, op *operator.Operator) *mosqBox {
	t.Helper()
	id, err := identity.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	enr := &cloudlink.Enroller{Identity: id, BrokerURL: u, RootCAs: f.CAPool(), Claim: mosqClaimCert(t, f),
		Board: "test", Version: "v0", MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- enr.Run(ctx) }()
	dev, err := op.Claim(ctx, id.ClaimCode(), "lobby", 20*time.Second)
	if err != nil {
		cancel()
		<-errc
		t.Fatalf("claim %s: %v", id.ClaimCode(), err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("enrolment of %s: %v", dev, err)
	}
	if dev != id.DeviceID() || !id.Enrolled() || id.Cert.Subject.CommonName != dev {
		t.Fatalf("claimed %s; box %s enrolled with %v", dev, id.DeviceID(), id.Cert)
	}
	if _, err := id.Cert.Verify(x509.VerifyOptions{Roots: f.CAPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the box's certificate does not chain to the fleet CA: %v", err)
	}
	st, err := store.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ob, err := outbox.Open(st, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &mosqBox{id: id, st: st, ob: ob}
}

// mosqLink is a running cloud link of a box.
type mosqLink struct {
	*cloudlink.Link
	errs    atomic.Int64 // failed connection attempts (Config.OnError)
	mu      sync.Mutex
	lastErr error
	stop    func()
}

func (l *mosqLink) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastErr
}

// runLink starts the box's cloud link to u; edit adjusts its configuration.
// The test's cleanup stops it (before the box's store closes).
func (b *mosqBox) runLink(t *testing.T, f *fleet.Fleet, u *url.URL, edit func(*cloudlink.Config)) *mosqLink {
	t.Helper()
	ml := &mosqLink{}
	cfg := cloudlink.Config{
		DeviceID: b.ID(), BrokerURL: u, RootCAs: f.CAPool(),
		Certificate: b.id.TLSCertificate, Outbox: b.ob,
		Dedup:      &cloudlink.StoreDedup{Store: b.st, Now: time.Now},
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, RevokedBackoff: time.Hour,
		OnError: func(err error) {
			ml.errs.Add(1)
			ml.mu.Lock()
			ml.lastErr = err
			ml.mu.Unlock()
		},
	}
	if edit != nil {
		edit(&cfg)
	}
	l, err := cloudlink.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ml.Link = l
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	var once sync.Once
	ml.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(ml.stop)
	return ml
}

// mosqWaitState waits up to 20 s for the link to reach want.
func mosqWaitState(t *testing.T, l *mosqLink, want cloudlink.State) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for l.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("link state %s, want %s (last error %q)", l.State(), want, l.Stats().LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mosqWaitErrors waits up to 15 s for n failed connection attempts.
func mosqWaitErrors(t *testing.T, l *mosqLink, n int64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for l.errs.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d failed connection attempts, want %d (state %s)", l.errs.Load(), n, l.State())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mosqEvent encodes an event envelope carrying msg.
func mosqEvent(t *testing.T, msg string) (wire.ID, []byte) {
	t.Helper()
	return mosqEnvelope(t, wire.TypeEvent, wire.Event{Kind: "test", Severity: wire.SeverityInfo, Message: msg})
}

func mosqCommand(t *testing.T, name string) (wire.ID, []byte) {
	t.Helper()
	return mosqEnvelope(t, wire.TypeCommand, wire.Command{Name: name, Deadline: time.Now().Add(5 * time.Minute)})
}

func mosqEnvelope(t *testing.T, typ string, body any) (wire.ID, []byte) {
	t.Helper()
	env, err := wire.New(typ, time.Now(), body)
	if err != nil {
		t.Fatal(err)
	}
	b, err := wire.Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	return env.ID, b
}

// envID is the envelope id of a payload (zero if it does not decode).
func mosqEnvID(p []byte) wire.ID {
	env, err := wire.Decode(p, wire.DefaultLimits())
	if err != nil {
		return wire.ID{}
	}
	return env.ID
}

// ---------------------------------------------------------------------------
// Bare MQTT clients

// mosqRaw is a bare paho client on one TLS connection (no reconnects) that
// records every message it receives.
type mosqRaw struct {
	*paho.Client
	Connack *paho.Connack

	mu   sync.Mutex
	msgs []*paho.Publish
}

// mosqDial connects a bare MQTT v5 client with cert and clientID (clean
// start, or a session of expiry seconds when expiry > 0). A refused TLS
// handshake or CONNECT comes back as the error.
func mosqDial(t *testing.T, f *fleet.Fleet, u *url.URL, cert tls.Certificate, clientID string, expiry uint32) (*mosqRaw, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &cloudlink.Dialer{TLS: &tls.Config{RootCAs: f.CAPool(), Certificates: []tls.Certificate{cert}}}
	conn, err := d.Dial(ctx, u)
	if err != nil {
		return nil, err
	}
	rc := &mosqRaw{}
	rc.Client = paho.NewClient(paho.ClientConfig{
		ClientID: clientID,
		Conn:     conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			rc.mu.Lock()
			rc.msgs = append(rc.msgs, pr.Packet)
			rc.mu.Unlock()
			return true, nil
		}},
	})
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: expiry == 0}
	if expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	ca, err := rc.Connect(ctx, cp)
	rc.Connack = ca
	if err != nil {
		conn.Close()
		return rc, err
	}
	t.Cleanup(func() { rc.Disconnect(&paho.Disconnect{}) })
	return rc, nil
}

func (rc *mosqRaw) received() []*paho.Publish {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]*paho.Publish(nil), rc.msgs...)
}

// waitPayload waits up to 10 s for a message on topic whose envelope id is id.
func (rc *mosqRaw) waitPayload(t *testing.T, topic string, id wire.ID) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, p := range rc.received() {
			if p.Topic == topic && mosqEnvID(p.Payload) == id {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s never arrived on %s", rc.ClientID(), id, topic)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sawID reports whether any message received carried envelope id.
func (rc *mosqRaw) sawID(id wire.ID) (string, bool) {
	for _, p := range rc.received() {
		if mosqEnvID(p.Payload) == id {
			return p.Topic, true
		}
	}
	return "", false
}

func (rc *mosqRaw) subscribe(t *testing.T, topic string) byte {
	t.Helper()
	sa, err := rc.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
	if sa != nil && len(sa.Reasons) == 1 {
		return sa.Reasons[0]
	}
	t.Fatalf("%s: subscribe %s: %v", rc.ClientID(), topic, err)
	return 0
}

// publish sends payload with qos and returns the PUBACK reason code (0 for
// QoS 0).
func (rc *mosqRaw) publish(t *testing.T, topic string, qos byte, payload []byte) byte {
	t.Helper()
	pr, err := rc.Publish(context.Background(), &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
	if pr == nil {
		t.Fatalf("%s: publish to %s: %v", rc.ClientID(), topic, err)
	}
	return pr.ReasonCode
}

// mosqTap sits between a box and mosquitto as a TLS-terminating man in the
// middle (the test holds the broker's key and the box's): it forwards every
// MQTT packet byte for byte and records, per envelope id, the PUBLISHes the
// box sent and the successful PUBACKs the broker answered them with. It
// shows whether a message that left the box's outbox was acknowledged.
type mosqTap struct {
	URL *url.URL

	ln       net.Listener
	down     *tls.Config
	up       *tls.Config
	upstream string

	mu        sync.Mutex
	published map[wire.ID]int // PUBLISH packets per envelope id (retransmissions included)
	acked     map[wire.ID]int // successful PUBACKs per envelope id
	refused   map[byte]int    // PUBACKs with a failure reason code
	conns     []net.Conn
}

// mosqStartTap listens on 127.0.0.1:0 as the broker and forwards to m with
// the box's certificate.
func mosqStartTap(t *testing.T, f *fleet.Fleet, m *mosqBroker, box tls.Certificate) *mosqTap {
	t.Helper()
	cf, kf := f.BrokerCertFiles()
	brokerCert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &mosqTap{
		URL: &url.URL{Scheme: "mqtts", Host: ln.Addr().String()}, ln: ln, upstream: m.URL.Host,
		down:      &tls.Config{Certificates: []tls.Certificate{brokerCert}},
		up:        &tls.Config{RootCAs: f.CAPool(), Certificates: []tls.Certificate{box}, ServerName: "127.0.0.1"},
		published: map[wire.ID]int{}, acked: map[wire.ID]int{}, refused: map[byte]int{},
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go tp.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		tp.mu.Lock()
		defer tp.mu.Unlock()
		for _, c := range tp.conns {
			c.Close()
		}
	})
	return tp
}

func (tp *mosqTap) serve(raw net.Conn) {
	down := tls.Server(raw, tp.down)
	up, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", tp.upstream, tp.up)
	if err != nil {
		raw.Close()
		return
	}
	tp.mu.Lock()
	tp.conns = append(tp.conns, down, up)
	tp.mu.Unlock()
	var pmu sync.Mutex
	pending := map[uint16]wire.ID{} // this connection's in-flight QoS 1 publishes
	done := make(chan struct{})
	go func() { // broker → box
		defer close(done)
		mosqPump(up, down, func(cp *packets.ControlPacket) {
			if ack, ok := cp.Content.(*packets.Puback); ok {
				pmu.Lock()
				id, ok := pending[ack.PacketID]
				delete(pending, ack.PacketID)
				pmu.Unlock()
				tp.mu.Lock()
				switch {
				case ack.ReasonCode >= 0x80:
					tp.refused[ack.ReasonCode]++
				case ok:
					tp.acked[id]++
				}
				tp.mu.Unlock()
			}
		})
		down.Close()
	}()
	mosqPump(down, up, func(cp *packets.ControlPacket) { // box → broker
		if p, ok := cp.Content.(*packets.Publish); ok && p.QoS == 1 {
			id := mosqEnvID(p.Payload)
			pmu.Lock()
			pending[p.PacketID] = id
			pmu.Unlock()
			tp.mu.Lock()
			tp.published[id]++
			tp.mu.Unlock()
		}
	})
	up.Close()
	<-done
}

// mosqPump copies MQTT packets from src to dst, byte for byte, showing each
// to seen before it is forwarded.
func mosqPump(src io.Reader, dst io.Writer, seen func(*packets.ControlPacket)) {
	r := bufio.NewReader(src)
	for {
		frame, err := mosqFrame(r)
		if err != nil {
			return
		}
		if cp, err := packets.ReadPacket(bytes.NewReader(frame)); err == nil {
			seen(cp)
		}
		if _, err := dst.Write(frame); err != nil {
			return
		}
	}
}

// mosqFrame reads one MQTT packet: fixed header, remaining length, body.
func mosqFrame(r *bufio.Reader) ([]byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	frame := []byte{first}
	n, mult := 0, 1
	for i := 0; ; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		frame = append(frame, c)
		n += int(c&0x7f) * mult
		if c&0x80 == 0 {
			break
		}
		if i == 3 {
			return nil, errors.New("malformed remaining length")
		}
		mult *= 128
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return append(frame, body...), nil
}

// ---------------------------------------------------------------------------
// Tests

// TestMosquittoEnrolAndACL proves, against mosquitto with the fleet's
// generated configuration, that two boxes enrol with the shared claim
// credential and connect with their own certificates, and that the ACL keeps
// them apart: box A (its own certificate and client id) can neither publish
// into box B's topics nor read what the operator sends B, and the claim
// credential cannot publish as any box.
func TestMosquittoEnrolAndACL(t *testing.T) {
	f := mosqFleet(t, "acl")
	m := mosqStart(t, f)
	op, inbox := mosqOperator(t, f, m.OpURL, operator.Options{})
	a := mosqEnrol(t, f, m.URL, op)
	b := mosqEnrol(t, f, m.URL, op)
	if a.id.Cert.SerialNumber.Cmp(b.id.Cert.SerialNumber) == 0 || a.ID() == b.ID() {
		t.Fatal("both boxes got the same certificate")
	}
	la := a.runLink(t, f, m.URL, nil)
	lb := b.runLink(t, f, m.URL, nil)
	mosqWaitState(t, la, cloudlink.StateOnline)
	mosqWaitState(t, lb, cloudlink.StateOnline)

	// Each link is online with its own certificate: mosquitto names the
	// client by the certificate's CN (use_identity_as_username), and each
	// box's event arrives under its own id, which the ACL only allows to
	// that username.
	for _, x := range []*mosqBox{a, b} {
		if m.logLines("New client connected", " as "+x.ID()+" ", "u'"+x.ID()+"'") == 0 {
			t.Errorf("mosquitto never saw %s connect with its own certificate:\n%s", x.ID(), m.logTail(3000))
		}
		id, p := mosqEvent(t, "hello from "+x.ID())
		if _, err := x.ob.Append(context.Background(), outbox.StreamEvent, p); err != nil {
			t.Fatal(err)
		}
		inbox.waitFor(t, x.ID()+"'s event", func(msg operator.Message) bool {
			return msg.Device == x.ID() && msg.Stream == "event" && msg.Env.ID == id
		})
	}

	// An observer with the operator's certificate sees everything under
	// outpost/: whatever A manages to put on any topic would show up here.
	obs, err := mosqDial(t, f, m.OpURL, mosqOperatorCert(t, f), "observer", 0)
	if err != nil {
		t.Fatal(err)
	}
	if rc := obs.subscribe(t, "outpost/#"); rc > 1 {
		t.Fatalf("observer subscription refused: %#x", rc)
	}

	// A's certificate under A's client id, as a bare client (A's link is
	// stopped first, or the two would take the client id from each other).
	la.stop()
	acert, err := a.id.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	ra, err := mosqDial(t, f, m.URL, acert, a.ID(), 0)
	if err != nil {
		t.Fatalf("A's certificate refused: %v", err)
	}
	ownDown := cloudlink.DownTopic(a.ID(), "#")
	if rc := ra.subscribe(t, ownDown); rc > 1 {
		t.Fatalf("A may not read its own down topic: SUBACK %#x", rc)
	}
	for _, filter := range []string{cloudlink.DownTopic(b.ID(), "#"), cloudlink.TopicRoot + "/+/down/#", "outpost/#", "#"} {
		rc := ra.subscribe(t, filter)
		// mosquitto 2.0's acl_file does not check subscriptions (SUBACK
		// grants them) and filters each message at delivery instead; a
		// broker may also refuse with 0x87. Delivery is checked below.
		t.Logf("A subscribes to %s: SUBACK %#x", filter, rc)
		if rc != 0x87 && rc != 0x80 && rc > 1 {
			t.Errorf("SUBACK %#x for %s", rc, filter)
		}
	}

	forbidden := map[wire.ID]string{}
	for _, c := range []struct {
		topic string
		qos   byte
		cmd   bool
	}{
		{cloudlink.UpTopic(b.ID(), outbox.StreamEvent), 1, false},
		{cloudlink.UpTopic(b.ID(), outbox.StreamEvent), 0, false},
		{cloudlink.StatusTopic(b.ID()), 1, false},
		{cloudlink.DownTopic(b.ID(), "command"), 1, true},
		{cloudlink.DownTopic(a.ID(), "command"), 1, true}, // a box cannot command itself either
	} {
		var id wire.ID
		var p []byte
		if c.cmd {
			id, p = mosqCommand(t, "reboot")
		} else {
			id, p = mosqEvent(t, "A pretending to be B")
		}
		forbidden[id] = c.topic
		rc := ra.publish(t, c.topic, c.qos, p)
		// mosquitto 2.0.11 answers a denied QoS 1 PUBLISH from an MQTT v5
		// client with PUBACK 0x87 (not authorised) and drops it; a QoS 0
		// one is dropped silently.
		t.Logf("A publishes QoS %d to %s: PUBACK %#x", c.qos, c.topic, rc)
		if c.qos == 1 && rc != 0x87 && rc != 0 {
			t.Errorf("PUBACK %#x for a denied publish to %s", rc, c.topic)
		}
	}
	// A message A may send, after the forbidden ones: once the observer has
	// it, the broker has routed everything A sent before it.
	ctlID, ctl := mosqEvent(t, "A's own event")
	if rc := ra.publish(t, cloudlink.UpTopic(a.ID(), outbox.StreamEvent), 1, ctl); rc != 0 {
		t.Fatalf("A may not publish on its own up topic: PUBACK %#x", rc)
	}
	obs.waitPayload(t, cloudlink.UpTopic(a.ID(), outbox.StreamEvent), ctlID)
	for id, topic := range forbidden {
		if got, ok := obs.sawID(id); ok {
			t.Errorf("A's message to %s was delivered (seen on %s)", topic, got)
		}
		if _, ok := inbox.find(func(msg operator.Message) bool { return msg.Env.ID == id }); ok {
			t.Errorf("the operator received A's message to %s", topic)
		}
	}

	// What the operator sends B reaches B (it answers: it has no command
	// handler) and never A, whatever A subscribed to.
	res, err := op.Command(context.Background(), b.ID(), "ping", nil, 10*time.Second)
	if err != nil || res.Error == "" {
		t.Fatalf("B did not answer the operator's command: %+v %v", res, err)
	}
	ctlID, ctl = mosqCommand(t, "for_a")
	if rc := obs.publish(t, cloudlink.DownTopic(a.ID(), "command"), 1, ctl); rc != 0 {
		t.Fatalf("operator publish to A: PUBACK %#x", rc)
	}
	ra.waitPayload(t, cloudlink.DownTopic(a.ID(), "command"), ctlID)
	for _, p := range ra.received() {
		own := strings.HasPrefix(p.Topic, cloudlink.DownTopic(a.ID(), "")) ||
			strings.HasPrefix(p.Topic, cloudlink.TopicRoot+"/enrol/"+a.ID()+"/")
		if !own || strings.Contains(p.Topic, b.ID()) {
			t.Errorf("A received a message on %s", p.Topic)
		}
	}
	if s := lb.Stats(); s.State != cloudlink.StateOnline || s.Refused != 0 {
		t.Errorf("B's link: %+v (a refused message means A's command reached it)", s)
	}

	// The claim credential (in every image) can ask to be enrolled and
	// nothing else: it cannot publish under any box's up/ topic.
	rc, err := mosqDial(t, f, m.URL, mosqClaimCert(t, f), "claim-probe", 0)
	if err != nil {
		t.Fatalf("claim credential refused: %v", err)
	}
	forbidden = map[wire.ID]string{}
	for _, dev := range []string{a.ID(), b.ID()} {
		for _, topic := range []string{cloudlink.UpTopic(dev, outbox.StreamEvent), cloudlink.UpTopic(dev, outbox.StreamAudit), cloudlink.StatusTopic(dev)} {
			for _, qos := range []byte{0, 1} {
				id, p := mosqEvent(t, "claim pretending to be a box")
				forbidden[id] = topic
				code := rc.publish(t, topic, qos, p)
				if qos == 1 && code != 0x87 && code != 0 {
					t.Errorf("PUBACK %#x for the claim credential's publish to %s", code, topic)
				}
				if qos == 1 && dev == a.ID() && topic == cloudlink.UpTopic(dev, outbox.StreamEvent) {
					t.Logf("claim credential publishes QoS 1 to %s: PUBACK %#x", topic, code)
				}
			}
		}
	}
	// Its own enrolment request is allowed: the control.
	ctlID, ctl = mosqEvent(t, "claim control")
	if code := rc.publish(t, cloudlink.EnrolRequestTopic("claim-probe"), 1, ctl); code != 0 {
		t.Fatalf("the claim credential may not ask to be enrolled: PUBACK %#x", code)
	}
	obs.waitPayload(t, cloudlink.EnrolRequestTopic("claim-probe"), ctlID)
	for id, topic := range forbidden {
		if got, ok := obs.sawID(id); ok {
			t.Errorf("the claim credential's message to %s was delivered (seen on %s)", topic, got)
		}
		if _, ok := inbox.find(func(msg operator.Message) bool { return msg.Env.ID == id }); ok {
			t.Errorf("the operator received the claim credential's message to %s as a box's", topic)
		}
	}
}

// TestMosquittoTakeoverReadsNoQueuedCommand proves that neither the claim
// credential nor another box's certificate, connecting under a box's client
// id to resume its persistent session, receives the commands queued there for
// the box: mosquitto re-checks queued messages against the new username. It
// also records what such a takeover does to the box (see the FINDING log).
func TestMosquittoTakeoverReadsNoQueuedCommand(t *testing.T) {
	f := mosqFleet(t, "takeover")
	m := mosqStart(t, f)
	op, inbox := mosqOperator(t, f, m.OpURL, operator.Options{})
	a := mosqEnrol(t, f, m.URL, op)
	b := mosqEnrol(t, f, m.URL, op)
	obs, err := mosqDial(t, f, m.OpURL, mosqOperatorCert(t, f), "observer", 0)
	if err != nil {
		t.Fatal(err)
	}
	answers := func(id wire.ID) func(operator.Message) bool {
		return func(msg operator.Message) bool {
			var r wire.CommandResult
			return msg.Device == b.ID() && msg.Stream == string(outbox.StreamCommandResult) &&
				wire.DecodeBody(msg.Env, &r, wire.DefaultLimits()) == nil && r.CommandID == id
		}
	}
	queue := func(name string) wire.ID {
		id, p := mosqCommand(t, name)
		// 0x10 "no matching subscribers" is success too: the box's
		// session may not hold its subscription yet at that instant.
		if rc := obs.publish(t, cloudlink.DownTopic(b.ID(), "command"), 1, p); rc != 0 && rc != 0x10 {
			t.Fatalf("operator publish: PUBACK %#x", rc)
		}
		return id
	}

	// Control: a command queued while the box is offline reaches it when it
	// is back (it answers "no command handler").
	l := b.runLink(t, f, m.URL, nil)
	mosqWaitState(t, l, cloudlink.StateOnline)
	l.stop()
	first := queue("while_offline")
	l = b.runLink(t, f, m.URL, nil)
	mosqWaitState(t, l, cloudlink.StateOnline)
	inbox.waitFor(t, "the answer to the queued command", answers(first))
	l.stop()

	acert, err := a.id.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	for _, thief := range []struct {
		name string
		cert tls.Certificate
	}{
		{"the claim credential", mosqClaimCert(t, f)},
		{"box A's certificate", acert},
	} {
		queued := queue("queued")
		rc, err := mosqDial(t, f, m.URL, thief.cert, b.ID(), 3600)
		if err != nil {
			t.Logf("%s under %s's client id refused: %v", thief.name, b.ID(), err)
			continue
		}
		t.Logf("%s under %s's client id: CONNACK %#x, session present %v", thief.name, b.ID(), rc.Connack.ReasonCode, rc.Connack.SessionPresent)
		time.Sleep(time.Second)
		for _, p := range rc.received() {
			t.Errorf("%s received %s from the box's session", thief.name, p.Topic)
		}
		rc.Disconnect(&paho.Disconnect{})

		l = b.runLink(t, f, m.URL, nil)
		mosqWaitState(t, l, cloudlink.StateOnline)
		deadline := time.Now().Add(3 * time.Second)
		_, got := inbox.find(answers(queued))
		for ; !got && time.Now().Before(deadline); _, got = inbox.find(answers(queued)) {
			time.Sleep(20 * time.Millisecond)
		}
		if !got {
			// use_username_as_clientid: mosquitto names the thief by its
			// certificate's CN, so it cannot take the box's id and session.
			t.Errorf("%s took over %s's client id and session; the command queued for the box never reached it", thief.name, b.ID())
		}
		l.stop()
	}
}

// TestMosquittoRevocation proves that a box revoked with fleet.Revoke is
// refused by mosquitto after a restart (which reloads the CRL) with the TLS
// certificate_revoked alert, that its link says so (StateRevoked, ErrRevoked)
// and waits RevokedBackoff instead of reconnecting in a storm, and that other
// boxes keep working.
func TestMosquittoRevocation(t *testing.T) {
	f := mosqFleet(t, "revoke")
	m := mosqStart(t, f)
	op, inbox := mosqOperator(t, f, m.OpURL, operator.Options{})
	a := mosqEnrol(t, f, m.URL, op)
	b := mosqEnrol(t, f, m.URL, op)
	la := a.runLink(t, f, m.URL, nil)
	lb := b.runLink(t, f, m.URL, nil)
	mosqWaitState(t, la, cloudlink.StateOnline)
	mosqWaitState(t, lb, cloudlink.StateOnline)

	if err := f.Revoke(a.ID()); err != nil {
		t.Fatal(err)
	}
	m.restart(syscall.SIGTERM)
	errsAtRestart := la.errs.Load()
	refusedAtRestart := m.logLines("certificate verify failed")
	mosqWaitState(t, la, cloudlink.StateRevoked)
	revokedAt := time.Now()
	if err := la.err(); !errors.Is(err, cloudlink.ErrRevoked) {
		t.Errorf("A's last error %v, want one wrapping ErrRevoked", err)
	}
	if s := la.Stats(); !strings.Contains(s.LastError, "revoked") {
		t.Errorf("A's LastError %q does not say it is revoked", s.LastError)
	}

	// A direct dial with A's certificate gets the same answer: mosquitto
	// (OpenSSL) sends the certificate_revoked alert in the handshake.
	acert, _ := a.id.TLSCertificate()
	d := &cloudlink.Dialer{TLS: &tls.Config{RootCAs: f.CAPool(), Certificates: []tls.Certificate{acert}}}
	if c, err := d.Dial(context.Background(), m.URL); err == nil {
		c.Close()
		t.Error("mosquitto accepted A's revoked certificate")
	} else {
		t.Logf("dialing with A's revoked certificate: %v", err)
		if !errors.Is(err, cloudlink.ErrRevoked) {
			t.Errorf("dial error %v does not wrap ErrRevoked", err)
		}
	}

	// No storm: over ~3 s, at most 2 attempts since the broker came back
	// (with RevokedBackoff = 1 h, the one refused attempt, maybe one more).
	time.Sleep(3*time.Second - time.Since(revokedAt))
	attempts := la.errs.Load() - errsAtRestart
	refused := m.logLines("certificate verify failed") - refusedAtRestart - 1 // minus our direct dial
	t.Logf("revoked link: %d failed attempts and %d TLS refusals at mosquitto since the restart; state %s", attempts, refused, la.State())
	if attempts > 2 || refused > 2 {
		t.Errorf("revoked box reconnects in a storm: %d attempts, %d refusals at the broker in ~3 s", attempts, refused)
	}
	if s := la.Stats(); s.State != cloudlink.StateRevoked || s.Connects != 1 {
		t.Errorf("A after revocation: %+v (want revoked, no new connection)", s)
	}

	// B still works: it is back online, its events arrive, it answers.
	mosqWaitState(t, lb, cloudlink.StateOnline)
	id, p := mosqEvent(t, "B after A's revocation")
	if _, err := b.ob.Append(context.Background(), outbox.StreamEvent, p); err != nil {
		t.Fatal(err)
	}
	inbox.waitFor(t, "B's event after the restart", func(msg operator.Message) bool { return msg.Env.ID == id })
	if res, err := op.Command(context.Background(), b.ID(), "ping", nil, 10*time.Second); err != nil || res.Error == "" {
		t.Errorf("B did not answer after A's revocation: %+v %v", res, err)
	}
}

// TestMosquittoBrokerRestartNoLoss streams 10,000 events from a box while
// mosquitto is restarted twice, once cleanly (SIGTERM) and once crashed
// (SIGKILL). The operator has a persistent session (fixed client id) and
// stalls (its handler blocks, so it stops acknowledging) from shortly before
// each restart until after it, so events wait at the broker when it goes
// down. It proves that the box loses nothing: every
// event reaches the operator, duplicates carry the same envelope id, and the
// box's outbox ends empty; a SIGTERM restart loses nothing end to end.
// After SIGKILL mosquitto restores its last autosave (autosave_interval 1),
// so it can lose messages it acknowledged in its last second: a broker
// durability limit, not the box's. What the box guarantees is checked
// exactly, through a man in the middle that sees every PUBACK: every event
// that left the outbox had a successful PUBACK from the broker, and each event
// lost end to end had left the outbox within the autosave window before the
// SIGKILL.
func TestMosquittoBrokerRestartNoLoss(t *testing.T) {
	const total = 10000
	const killWindow = 2500 * time.Millisecond // autosave 1 s, plus slack on a busy machine
	const stall = 700 * time.Millisecond       // the operator's stall before a restart

	f := mosqFleet(t, "restart")
	m := mosqStart(t, f)

	var mu sync.Mutex
	got := map[int][]wire.ID{} // event index → envelope id of each copy
	var unique, copies atomic.Int64
	var lastNew atomic.Int64 // unix ns of the last first-seen event
	var device atomic.Value  // the box's id, once enrolled
	device.Store("")
	var gate atomic.Pointer[chan struct{}] // non-nil: the operator's handler blocks until it closes
	record := func(msg operator.Message) {
		if g := gate.Load(); g != nil {
			<-*g
		}
		if msg.Device != device.Load().(string) || msg.Stream != string(outbox.StreamEvent) {
			return
		}
		var ev wire.Event
		if err := wire.DecodeBody(msg.Env, &ev, wire.DefaultLimits()); err != nil {
			t.Errorf("undecodable event: %v", err)
			return
		}
		i, err := strconv.Atoi(ev.Message)
		if err != nil || i < 0 || i >= total {
			t.Errorf("event with message %q", ev.Message)
			return
		}
		copies.Add(1)
		mu.Lock()
		if len(got[i]) == 0 {
			unique.Add(1)
			lastNew.Store(time.Now().UnixNano())
		}
		got[i] = append(got[i], msg.Env.ID)
		mu.Unlock()
	}
	// One operator all along: its connection manager reconnects after each
	// restart. (A new Operator under the same client id would lose part of
	// what waited at the broker: the messages delivered before Subscribe can
	// be called are acknowledged and dropped by operator.receive.)
	op, _ := mosqOperator(t, f, m.OpURL, operator.Options{ClientID: "operator-restart-test", Persistent: true})
	op.Subscribe(record)
	b := mosqEnrol(t, f, m.URL, op)
	device.Store(b.ID())
	bcert, err := b.id.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	tap := mosqStartTap(t, f, m, bcert)

	l := b.runLink(t, f, tap.URL, nil)
	mosqWaitState(t, l, cloudlink.StateOnline)

	// The outbox's head over time: when each entry left it (was PUBACKed).
	seqOf := make([]outbox.Seq, total) // index → outbox sequence number
	idOf := make([]wire.ID, total)     // index → envelope id
	var produced atomic.Int64
	type sample struct {
		at       time.Time
		head     outbox.Seq // oldest pending entry; 0 = empty
		produced int64      // entries appended before the head was read
	}
	var samples []sample
	samplerDone := make(chan struct{})
	stopSampler := make(chan struct{})
	go func() {
		defer close(samplerDone)
		last := ^outbox.Seq(0)
		for {
			select {
			case <-stopSampler:
				return
			case <-time.After(2 * time.Millisecond):
			}
			n := produced.Load()
			es, err := b.ob.Next(outbox.StreamEvent, 0, 1)
			if err != nil {
				continue
			}
			var h outbox.Seq
			if len(es) > 0 {
				h = es[0].Seq
			}
			if h != last || h == 0 {
				samples = append(samples, sample{time.Now(), h, n})
				last = h
			}
		}
	}()

	start := time.Now()
	producerDone := make(chan struct{})
	go func() {
		defer close(producerDone)
		for i := range total {
			id, p := mosqEvent(t, strconv.Itoa(i))
			q, err := b.ob.Append(context.Background(), outbox.StreamEvent, p)
			if err != nil {
				t.Errorf("append %d: %v", i, err)
				return
			}
			seqOf[i], idOf[i] = q, id
			produced.Add(1)
		}
	}()

	waitUnique := func(n int64) {
		deadline := time.Now().Add(20 * time.Second)
		for unique.Load() < n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	// restart stalls the operator so that events wait at the broker,
	// restarts the broker with sig and lets the operator go on.
	restart := func(sig syscall.Signal) (at, dead time.Time, waiting int64) {
		g := make(chan struct{})
		gate.Store(&g)
		time.Sleep(stall)
		waiting = int64(l.Stats().Published) - unique.Load()
		at = time.Now()
		m.stop(sig)
		dead = time.Now()
		m.start()
		gate.Store(nil)
		close(g)
		t.Logf("%v at %.2fs: %d events received, ~%d waiting at the broker, broker down %v",
			sig, at.Sub(start).Seconds(), unique.Load(), waiting, time.Since(at).Round(time.Millisecond))
		return at, dead, waiting
	}

	waitUnique(total / 8)
	termAt, _, termWaiting := restart(syscall.SIGTERM)
	termDone := time.Now()
	// SIGKILL later, far enough from the first restart that a loss can be
	// told apart.
	waitUnique(total / 2)
	if d := killWindow + stall - time.Since(termDone); d > 0 {
		time.Sleep(d)
	}
	killAt, _, _ := restart(syscall.SIGKILL)
	if produced.Load() >= total && unique.Load() >= total {
		t.Errorf("the stream was over before SIGKILL: the test did not crash the broker mid-stream")
	}

	// Drain: the box's outbox empties, then the operator gets what is left.
	<-producerDone
	elapsedProduced := time.Since(start)
	deadline := time.Now().Add(40 * time.Second)
	for {
		st, err := b.ob.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Streams[outbox.StreamEvent].Depth == 0 && unique.Load() == total {
			break
		}
		if st.Streams[outbox.StreamEvent].Depth == 0 && time.Since(time.Unix(0, lastNew.Load())) > 3*time.Second {
			break // nothing new for 3 s with an empty outbox: the rest is lost
		}
		if time.Now().After(deadline) {
			t.Fatalf("not drained after 40 s: outbox %+v, %d of %d received, link %+v",
				st.Streams[outbox.StreamEvent], unique.Load(), total, l.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Unix(0, lastNew.Load()).Sub(start)
	close(stopSampler)
	<-samplerDone
	s := l.Stats()
	t.Logf("%d events in %.2fs end to end (producer done after %.2fs): %.0f msgs/s; %d copies received (%d duplicates); link published %d, %d connects",
		unique.Load(), elapsed.Seconds(), elapsedProduced.Seconds(), float64(unique.Load())/elapsed.Seconds(),
		copies.Load(), copies.Load()-unique.Load(), s.Published, s.Connects)

	// Duplicates only of the same envelope.
	mu.Lock()
	defer mu.Unlock()
	for i, ids := range got {
		for _, id := range ids[1:] {
			if id != ids[0] {
				t.Errorf("event %d arrived as two different envelopes %s and %s", i, ids[0], id)
			}
		}
	}
	if st, _ := b.ob.Stats(); st.Streams[outbox.StreamEvent].Depth != 0 {
		t.Errorf("outbox not empty: %+v", st.Streams[outbox.StreamEvent])
	}

	// Every event left the outbox; each must have had a successful PUBACK.
	tap.mu.Lock()
	var unacked []int
	publishes := 0
	for i, id := range idOf {
		publishes += tap.published[id]
		if tap.acked[id] == 0 {
			unacked = append(unacked, i)
		}
	}
	t.Logf("between box and broker: %d PUBLISH packets for %d events (%d retransmitted), failed PUBACKs %v",
		publishes, total, publishes-total, tap.refused)
	tap.mu.Unlock()
	if len(unacked) > 0 {
		t.Errorf("%d events left the box's outbox without a successful PUBACK: %v", len(unacked), mosqShortList(unacked))
	}

	// Losses: only the SIGKILLed broker's, only what it had acknowledged
	// (the entry left the outbox) in its autosave window before the kill.
	removedAt := func(q outbox.Seq) (time.Time, bool) {
		for _, s := range samples {
			if (s.head != 0 && s.head > q) || (s.head == 0 && s.produced >= int64(q)) {
				return s.at, true
			}
		}
		return time.Time{}, false
	}
	var lost []int
	for i := range total {
		if len(got[i]) == 0 {
			lost = append(lost, i)
		}
	}
	if len(lost) == 0 {
		t.Logf("nothing lost end to end, SIGKILL included")
		return
	}
	defer func() {
		if !t.Failed() {
			t.Logf("SIGTERM restart: nothing lost of the ~%d events waiting at the broker", termWaiting)
		}
	}()
	var first, last time.Duration // before the kill, of the first and last lost event's removal
	var unseen, early []int
	timed := false
	for _, i := range lost {
		at, ok := removedAt(seqOf[i])
		switch {
		case !ok:
			unseen = append(unseen, i)
			continue
		case at.Before(killAt.Add(-killWindow)):
			early = append(early, i)
		}
		d := killAt.Sub(at)
		if !timed || d > first {
			first = d
		}
		if !timed || d < last {
			last = d
		}
		timed = true
	}
	if len(unseen) > 0 {
		t.Errorf("%d events lost whose outbox entries were never seen leaving: %v", len(unseen), mosqShortList(unseen))
	}
	if len(early) > 0 {
		t.Errorf("%d events lost that left the outbox more than %v before the SIGKILL (the SIGTERM restart was %v before it), not explained by mosquitto's autosave: %v",
			len(early), killWindow, killAt.Sub(termAt).Round(time.Millisecond), mosqShortList(early))
	}
	t.Logf("BROKER DURABILITY: mosquitto lost %d events to SIGKILL %v; they had left the box's outbox (PUBACKed) from %v to %v before the kill (negative: the ack was written just after); autosave_interval 1",
		len(lost), mosqShortList(lost), first.Round(time.Millisecond), last.Round(time.Millisecond))
}

func mosqShortList(xs []int) string {
	if len(xs) <= 20 {
		return fmt.Sprint(xs)
	}
	return fmt.Sprintf("%v ... %v", xs[:10], xs[len(xs)-10:])
}

// TestMosquittoThroughProxy proves that the link reaches mosquitto through an
// HTTP CONNECT proxy with basic auth, and that with a wrong proxy password it
// stays offline with an error that says the proxy refused its credentials.
func TestMosquittoThroughProxy(t *testing.T) {
	f := mosqFleet(t, "proxy")
	m := mosqStart(t, f)
	op, inbox := mosqOperator(t, f, m.OpURL, operator.Options{})
	b := mosqEnrol(t, f, m.URL, op)
	px, err := connectproxy.Start("site", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)

	l := b.runLink(t, f, m.URL, func(c *cloudlink.Config) { c.Proxy = px.URL })
	mosqWaitState(t, l, cloudlink.StateOnline)
	if n := px.Tunnels.Load(); n < 1 {
		t.Fatalf("online, but the proxy opened %d tunnels", n)
	}
	id, p := mosqEvent(t, "through the proxy")
	if _, err := b.ob.Append(context.Background(), outbox.StreamEvent, p); err != nil {
		t.Fatal(err)
	}
	inbox.waitFor(t, "the event sent through the proxy", func(msg operator.Message) bool {
		return msg.Device == b.ID() && msg.Env.ID == id
	})
	l.stop()

	tunnels := px.Tunnels.Load()
	bad := b.runLink(t, f, m.URL, func(c *cloudlink.Config) { c.Proxy = px.WithCredentials("site", "wrong") })
	mosqWaitErrors(t, bad, 3)
	s := bad.Stats()
	if s.State == cloudlink.StateOnline || s.Connects != 0 {
		t.Errorf("link with a wrong proxy password connected: %+v", s)
	}
	if !strings.Contains(s.LastError, cloudlink.ErrProxyAuth.Error()) {
		t.Errorf("LastError %q does not say the proxy refused the credentials", s.LastError)
	}
	if err := bad.err(); !errors.Is(err, cloudlink.ErrProxyAuth) {
		t.Errorf("connection error %v does not wrap ErrProxyAuth", err)
	}
	if n := px.Tunnels.Load(); n != tunnels {
		t.Errorf("the proxy opened %d tunnels for wrong credentials", n-tunnels)
	}
	t.Logf("wrong proxy password: %s", s.LastError)
}

// TestMosquittoWrongCA proves that a box whose fleet file carries another
// fleet's CA refuses the broker and says why: the broker's certificate is not
// signed by the fleet CA.
func TestMosquittoWrongCA(t *testing.T) {
	f := mosqFleet(t, "right")
	other := mosqFleet(t, "other")
	m := mosqStart(t, f)
	op, _ := mosqOperator(t, f, m.OpURL, operator.Options{})
	b := mosqEnrol(t, f, m.URL, op)

	l := b.runLink(t, f, m.URL, func(c *cloudlink.Config) { c.RootCAs = other.CAPool() })
	mosqWaitErrors(t, l, 2)
	s := l.Stats()
	if s.State == cloudlink.StateOnline || s.Connects != 0 {
		t.Errorf("link trusting another fleet's CA connected: %+v", s)
	}
	if !strings.Contains(s.LastError, "not signed by the fleet CA") {
		t.Errorf("LastError %q does not say the broker's certificate is not signed by the fleet CA", s.LastError)
	}
	if err := l.err(); !errors.Is(err, cloudlink.ErrBrokerCA) {
		t.Errorf("connection error %v does not wrap ErrBrokerCA", err)
	}
	if s.State == cloudlink.StateRevoked || s.State == cloudlink.StateRejected {
		t.Errorf("state %s blames the box's certificate for the broker's", s.State)
	}
	if n := m.logLines("New client connected", "u'"+b.ID()+"'"); n != 0 {
		t.Errorf("mosquitto saw the box connect %d times", n)
	}
	t.Logf("wrong CA: %s", s.LastError)
}

// TestMosquittoRevocationWithoutRestart proves that `outpost fleet revoke`
// (fleet.Revoke + fleet.ReloadMosquitto: ACL rewritten, SIGHUP) cuts off a
// box that is still connected, without restarting the broker: what it
// publishes no longer reaches the fleet and it receives no commands, while
// another box keeps working.
func TestMosquittoRevocationWithoutRestart(t *testing.T) {
	f := mosqFleet(t, "revoke-live")
	m := mosqStart(t, f)
	op, inbox := mosqOperator(t, f, m.OpURL, operator.Options{})
	a := mosqEnrol(t, f, m.URL, op)
	b := mosqEnrol(t, f, m.URL, op)
	la := a.runLink(t, f, m.URL, nil)
	lb := b.runLink(t, f, m.URL, nil)
	mosqWaitState(t, la, cloudlink.StateOnline)
	mosqWaitState(t, lb, cloudlink.StateOnline)

	if err := f.Revoke(a.ID()); err != nil {
		t.Fatal(err)
	}
	signalled, err := f.ReloadMosquitto(m.dir)
	if err != nil || !signalled {
		t.Fatalf("ReloadMosquitto: signalled %v, %v", signalled, err)
	}
	// mosquitto logs the reload; give it a moment to read the new ACL.
	deadline := time.Now().Add(5 * time.Second)
	for m.logLines("Reloading config") == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)

	id, p := mosqEvent(t, "A after its revocation")
	if _, err := a.ob.Append(context.Background(), outbox.StreamEvent, p); err != nil {
		t.Fatal(err)
	}
	idB, pB := mosqEvent(t, "B after A's revocation")
	if _, err := b.ob.Append(context.Background(), outbox.StreamEvent, pB); err != nil {
		t.Fatal(err)
	}
	inbox.waitFor(t, "B's event after the reload", func(msg operator.Message) bool { return msg.Env.ID == idB })
	time.Sleep(time.Second)
	if _, ok := inbox.find(func(msg operator.Message) bool { return msg.Env.ID == id }); ok {
		t.Error("the revoked box's event reached the fleet after the reload")
	}
	if _, err := op.Command(context.Background(), a.ID(), "ping", nil, 3*time.Second); err == nil {
		t.Error("the revoked box answered a command after the reload")
	}
	if res, err := op.Command(context.Background(), b.ID(), "ping", nil, 10*time.Second); err != nil || res.Error == "" {
		t.Errorf("B did not answer after A's revocation: %+v %v", res, err)
	}
	// A new connection with A's certificate: refused in TLS (mosquitto
	// reloads the CRL with the SIGHUP).
	acert, _ := a.id.TLSCertificate()
	d := &cloudlink.Dialer{TLS: &tls.Config{RootCAs: f.CAPool(), Certificates: []tls.Certificate{acert}}}
	if c, err := d.Dial(context.Background(), m.URL); err == nil {
		c.Close()
		t.Error("after SIGHUP, mosquitto still completes a TLS handshake with A's revoked certificate")
	} else if !errors.Is(err, cloudlink.ErrRevoked) {
		t.Errorf("after SIGHUP, dial error %v does not wrap ErrRevoked", err)
	}
}
