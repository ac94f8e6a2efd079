// Package cloudlink is the box's one connection to its fleet: MQTT v5 over
// TLS (or WebSocket over TLS, or either through an HTTP proxy), outbound only,
// with msgpack envelopes (package wire). What the box sends goes through a
// durable outbox (package outbox) and leaves it only when the broker has
// acknowledged it; what the fleet sends is size-bounded, validated, checked
// for replay and age, and handed to one dispatcher.
package cloudlink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
)

// TopicRoot prefixes every topic (docs/protocol.md).
const TopicRoot = "outpost/v1"

// UpTopic is where a box publishes stream s.
func UpTopic(device string, s outbox.Stream) string {
	return TopicRoot + "/" + device + "/up/" + string(s)
}

// DownTopic is where the fleet sends kind ("command", "config") to a box.
func DownTopic(device, kind string) string { return TopicRoot + "/" + device + "/down/" + kind }

// StatusTopic carries a box's retained online/offline status.
func StatusTopic(device string) string { return TopicRoot + "/" + device + "/up/status" }

// State is the link's state as the LAN page and telemetry show it.
type State string

// The states.
const (
	StateOffline    State = "offline"
	StateConnecting State = "connecting"
	StateOnline     State = "online"
	StateClockUnset State = "waiting-for-clock"
	StateRevoked    State = "revoked"
	StateRejected   State = "certificate-rejected"
)

// ErrClockUnset is returned instead of dialing while the clock cannot be
// trusted: TLS would judge every certificate expired or not yet valid.
var ErrClockUnset = errors.New("the clock is not set yet (waiting for NTP); messages stay queued")

// Handler receives what the fleet sends. Implementations must be quick or
// hand work off; they run on the MQTT receive path.
type Handler interface {
	// HandleCommand runs a validated, fresh, first-seen command.
	HandleCommand(ctx context.Context, env wire.Envelope, cmd wire.Command) wire.CommandResult
	// HandleConfig applies (or refuses) a desired config; the report goes
	// back to the fleet. The handler decides about versions it has seen.
	HandleConfig(ctx context.Context, env wire.Envelope, cfg wire.ConfigDesired) wire.ConfigReported
	// HandleRenewal takes the fleet's answer to a certificate renewal.
	HandleRenewal(ctx context.Context, env wire.Envelope, r wire.EnrolResponse)
}

// Config configures a Link.
type Config struct {
	DeviceID  string
	BrokerURL *url.URL
	RootCAs   *x509.CertPool
	// Certificate returns the client certificate for each connection
	// attempt, so a renewed certificate is used from the next connection.
	Certificate func() (tls.Certificate, error)
	Proxy       *url.URL
	Outbox      *outbox.Outbox
	Handler     Handler
	// Dedup remembers command ids; nil keeps them in memory only.
	Dedup Dedup
	Log   *slog.Logger
	// Now is the clock; ClockSet says whether it can be trusted.
	Now      func() time.Time
	ClockSet func() bool
	// MaxCommandAge refuses older commands (default 10 min); commands from
	// more than a minute in the future are refused too.
	MaxCommandAge time.Duration
	// Backoff between connection attempts: exponential from MinBackoff to
	// MaxBackoff with full jitter (defaults 1 s, 5 min); RevokedBackoff after
	// the broker said the certificate is revoked (default 1 h).
	MinBackoff, MaxBackoff, RevokedBackoff time.Duration
	// Limits bound what the box accepts from the network.
	Limits wire.Limits
	// OnError reports each failed connection attempt (for audit/events).
	OnError func(error)
}

// Stats are the link's counters for telemetry.
type Stats struct {
	State      State
	LastError  string
	Connects   int64
	Reconnects int64
	Published  int64
	Refused    int64 // inbound messages refused (malformed, replayed, stale)
	RTT        time.Duration
	BytesUp    int64 // on the wire, TLS included
	BytesDown  int64
	// SentByStream counts delivered payload bytes per stream since start.
	SentByStream map[outbox.Stream]int64
}

// Link is a running cloud link.
type Link struct {
	cfg Config
	log *slog.Logger

	state     atomic.Value // State
	lastErr   atomic.Value // string
	connects  atomic.Int64
	published atomic.Int64
	refused   atomic.Int64
	rtt       atomic.Int64
	bytesUp   atomic.Int64
	bytesDown atomic.Int64
	attempt   atomic.Int64

	wake   []chan struct{} // per stream
	cm     atomic.Pointer[autopaho.ConnectionManager]
	sentBy map[outbox.Stream]*atomic.Int64 // payload bytes delivered, per stream
}

// New checks cfg and returns a Link; Run starts it.
func New(cfg Config) (*Link, error) {
	switch {
	case cfg.DeviceID == "":
		return nil, errors.New("cloudlink: no device id")
	case cfg.BrokerURL == nil:
		return nil, errors.New("cloudlink: no broker URL")
	case cfg.Outbox == nil:
		return nil, errors.New("cloudlink: no outbox")
	case cfg.Certificate == nil:
		return nil, errors.New("cloudlink: no certificate source")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ClockSet == nil {
		cfg.ClockSet = func() bool { return cfg.Now().Year() >= 2025 }
	}
	if cfg.MaxCommandAge == 0 {
		cfg.MaxCommandAge = 10 * time.Minute
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.RevokedBackoff == 0 {
		cfg.RevokedBackoff = time.Hour
	}
	if cfg.Dedup == nil {
		cfg.Dedup = NewMemoryDedup()
	}
	if cfg.Limits == (wire.Limits{}) {
		cfg.Limits = wire.DefaultLimits()
	}
	l := &Link{cfg: cfg, log: cfg.Log}
	l.state.Store(StateOffline)
	l.lastErr.Store("")
	l.sentBy = map[outbox.Stream]*atomic.Int64{}
	for _, s := range outbox.Streams() {
		l.wake = append(l.wake, make(chan struct{}, 1))
		l.sentBy[s] = new(atomic.Int64)
	}
	return l, nil
}

// State returns the current state.
func (l *Link) State() State { return l.state.Load().(State) }

// Stats returns the counters.
func (l *Link) Stats() Stats {
	c := l.connects.Load()
	return Stats{
		State: l.State(), LastError: l.lastErr.Load().(string),
		Connects: c, Reconnects: max(c-1, 0),
		Published: l.published.Load(), Refused: l.refused.Load(),
		RTT:     time.Duration(l.rtt.Load()),
		BytesUp: l.bytesUp.Load(), BytesDown: l.bytesDown.Load(),
		SentByStream: l.sentByStream(),
	}
}

func (l *Link) sentByStream() map[outbox.Stream]int64 {
	m := make(map[outbox.Stream]int64, len(l.sentBy))
	for s, n := range l.sentBy {
		m[s] = n.Load()
	}
	return m
}

func (l *Link) setState(s State) {
	if old := l.state.Swap(s); old != s {
		l.log.Info("cloud link state", "state", s)
	}
}

// backoff waits long after a revocation, so a revoked box does not hammer
// the broker; otherwise it is exponential with jitter.
func (l *Link) backoff(attempt int) time.Duration {
	if attempt > 0 && l.State() == StateRevoked {
		return l.cfg.RevokedBackoff
	}
	return expBackoff(l.cfg.MinBackoff, l.cfg.MaxBackoff)(attempt)
}

// expBackoff doubles from lo to hi per failed attempt, with jitter over the
// upper half, so a fleet that lost its broker does not come back in step.
func expBackoff(lo, hi time.Duration) func(int) time.Duration {
	return func(attempt int) time.Duration {
		if attempt == 0 {
			return 0
		}
		d := lo << min(attempt-1, 20)
		if d > hi || d <= 0 {
			d = hi
		}
		return d/2 + rand.N(d/2+1)
	}
}

func (l *Link) dial(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
	l.attempt.Add(1)
	if !l.cfg.ClockSet() {
		l.setState(StateClockUnset)
		return nil, ErrClockUnset
	}
	cert, err := l.cfg.Certificate()
	if err != nil {
		return nil, fmt.Errorf("cloudlink: client certificate: %w", err)
	}
	l.setState(StateConnecting)
	d := &Dialer{
		TLS: &tls.Config{
			RootCAs:      l.cfg.RootCAs,
			Certificates: []tls.Certificate{cert},
			Time:         l.cfg.Now,
		},
		Proxy: l.cfg.Proxy,
	}
	conn, err := d.Dial(ctx, u)
	if err != nil {
		switch {
		case errors.Is(err, ErrRevoked):
			l.setState(StateRevoked)
		case errors.Is(err, ErrCertRejected):
			l.setState(StateRejected)
		default:
			l.setState(StateOffline)
		}
		return nil, err
	}
	return newCountingConn(conn, &l.bytesUp, &l.bytesDown), nil
}

// Run keeps the link up until ctx ends.
func (l *Link) Run(ctx context.Context) error {
	dev := l.cfg.DeviceID
	offline, _ := wire.New(wire.TypeEvent, l.cfg.Now(), wire.Event{Kind: "offline", Severity: "warning", Message: "connection lost"})
	will, _ := wire.Encode(offline)
	maxPacket := uint32(l.cfg.Limits.MaxBytes + 1024)
	cc := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{l.cfg.BrokerURL},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         7 * 24 * 3600, // commands wait at the broker for a week
		ConnectTimeout:                30 * time.Second,
		ReconnectBackoff:              l.backoff,
		AttemptConnection:             l.dial,
		WillMessage:                   &paho.WillMessage{Topic: StatusTopic(dev), QoS: 1, Retain: true, Payload: will},
		ConnectPacketBuilder: func(c *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if c.Properties == nil {
				c.Properties = &paho.ConnectProperties{}
			}
			c.Properties.MaximumPacketSize = &maxPacket
			return c, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			l.connects.Add(1)
			l.attempt.Store(0)
			l.lastErr.Store("")
			l.setState(StateOnline)
			go l.onUp(ctx, cm)
		},
		OnConnectionDown: func() bool {
			if l.State() == StateOnline {
				l.setState(StateOffline)
			}
			return true
		},
		OnConnectError: func(err error) {
			var ce *autopaho.ConnackError
			if errors.As(err, &ce) {
				switch ce.ReasonCode {
				case 0x8A: // banned: the fleet revoked this box
					l.setState(StateRevoked)
					err = fmt.Errorf("%w (CONNACK banned): %v", ErrRevoked, err)
				case 0x86, 0x87: // bad credentials, not authorised
					l.setState(StateRejected)
					err = fmt.Errorf("%w (CONNACK %#x): %v", ErrCertRejected, ce.ReasonCode, err)
				default:
					l.setState(StateOffline)
				}
			}
			l.lastErr.Store(err.Error())
			l.log.Warn("cloud link: connection attempt failed", "err", err, "state", l.State())
			if l.cfg.OnError != nil {
				l.cfg.OnError(err)
			}
		},
		ClientConfig: paho.ClientConfig{
			ClientID: dev,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){
				func(pr paho.PublishReceived) (bool, error) {
					l.receive(ctx, pr)
					return true, nil
				},
			},
			OnClientError: func(err error) { l.log.Warn("cloud link: client error", "err", err) },
			OnServerDisconnect: func(d *paho.Disconnect) {
				reason := ""
				if d.Properties != nil {
					reason = d.Properties.ReasonString
				}
				l.log.Warn("cloud link: broker disconnected us", "code", d.ReasonCode, "reason", reason)
			},
		},
	}
	cm, err := autopaho.NewConnection(ctx, cc)
	if err != nil {
		return fmt.Errorf("cloudlink: %w", err)
	}
	l.cm.Store(cm)
	var wg sync.WaitGroup
	for i, s := range outbox.Streams() {
		wg.Add(1)
		go func() { defer wg.Done(); l.sender(ctx, cm, s, l.wake[i]) }()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-l.cfg.Outbox.Notify():
				for _, w := range l.wake {
					select {
					case w <- struct{}{}:
					default:
					}
				}
			}
		}
	}()
	<-ctx.Done()
	wg.Wait()
	dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cm.Disconnect(dctx)
	<-cm.Done()
	l.setState(StateOffline)
	return nil
}

func (l *Link) onUp(ctx context.Context, cm *autopaho.ConnectionManager) {
	dev := l.cfg.DeviceID
	if _, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: DownTopic(dev, "#"), QoS: 1},
	}}); err != nil {
		l.log.Warn("cloud link: subscribe failed", "err", err)
	}
	online, _ := wire.New(wire.TypeEvent, l.cfg.Now(), wire.Event{Kind: "online", Severity: "info", Message: "connected"})
	b, _ := wire.Encode(online)
	start := time.Now()
	if _, err := cm.Publish(ctx, &paho.Publish{Topic: StatusTopic(dev), QoS: 1, Retain: true, Payload: b}); err == nil {
		l.rtt.Store(int64(time.Since(start)))
	}
	for _, w := range l.wake {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// Publish sends a message straight to the broker, not through the outbox,
// for requests that are worthless after a restart (a renewal's CSR, whose
// key lives only in memory). It fails when the link is down.
func (l *Link) Publish(ctx context.Context, topicSuffix string, payload []byte) error {
	cm := l.cm.Load()
	if cm == nil {
		return autopaho.ConnectionDownError
	}
	_, err := cm.Publish(ctx, &paho.Publish{Topic: TopicRoot + "/" + l.cfg.DeviceID + "/up/" + topicSuffix, QoS: 1, Payload: payload})
	return err
}

// sender publishes one stream in order: an entry leaves the outbox only
// after the broker's PUBACK. After a failure it retries from the first
// unacknowledged entry (same message id, so the receiver can drop the
// duplicate). Acknowledged entries are deleted in batches by an acker, so
// the fsync of a delete never stalls the next publish.
func (l *Link) sender(ctx context.Context, cm *autopaho.ConnectionManager, s outbox.Stream, wake <-chan struct{}) {
	topic := UpTopic(l.cfg.DeviceID, s)
	acks := make(chan outbox.Seq, 4096)
	ackerDone := make(chan struct{})
	go l.acker(s, acks, ackerDone)
	defer func() { close(acks); <-ackerDone }()
	var after outbox.Seq
	for ctx.Err() == nil {
		if err := cm.AwaitConnection(ctx); err != nil {
			return
		}
		entries, err := l.cfg.Outbox.Next(s, after, 256)
		if err != nil {
			l.log.Error("cloud link: outbox read failed", "stream", s, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		if len(entries) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			case <-time.After(5 * time.Second): // belt and braces
			}
			continue
		}
		for _, e := range entries {
			start := time.Now()
			pr, err := cm.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: e.Payload})
			if pr != nil && permanentRefusal(pr.ReasonCode) {
				// The broker received it and refuses it for good (not
				// authorised, bad topic, bad payload): retrying would
				// block the stream forever. Other codes (packet id in
				// use after a restart, quota) are retried.
				l.refused.Add(1)
				l.log.Error("cloud link: the broker refused a message; dropping it", "stream", s, "seq", e.Seq, "reason", pr.ReasonCode, "err", err)
				after = e.Seq
				acks <- e.Seq
				continue
			}
			if err != nil {
				if ctx.Err() == nil {
					l.log.Debug("cloud link: publish failed; will retry", "stream", s, "seq", e.Seq, "err", err)
					sleep(ctx, 200*time.Millisecond)
				}
				break
			}
			l.rtt.Store(int64(time.Since(start)))
			l.published.Add(1)
			l.sentBy[s].Add(int64(len(e.Payload)))
			after = e.Seq
			acks <- e.Seq
		}
	}
}

// permanentRefusal reports PUBACK reason codes that no retry can change.
func permanentRefusal(code byte) bool {
	switch code {
	case 0x87, 0x90, 0x99: // not authorised, topic name invalid, payload format invalid
		return true
	}
	return false
}

// acker deletes acknowledged entries, as many per transaction as have
// arrived; it finishes what it has when acks closes.
func (l *Link) acker(s outbox.Stream, acks <-chan outbox.Seq, done chan<- struct{}) {
	defer close(done)
	batch := make([]outbox.Seq, 0, 256)
	for seq := range acks {
		batch = append(batch[:0], seq)
	more:
		for len(batch) < cap(batch) {
			select {
			case q, ok := <-acks:
				if !ok {
					break more
				}
				batch = append(batch, q)
			default:
				break more
			}
		}
		// Not the link's context: acks of delivered messages must land even
		// while the link shuts down.
		if err := l.cfg.Outbox.Ack(context.Background(), s, batch...); err != nil {
			l.log.Error("cloud link: outbox ack failed (entries will be sent again)", "stream", s, "err", err)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// receive handles one message from the fleet.
func (l *Link) receive(ctx context.Context, pr paho.PublishReceived) {
	p := pr.Packet
	kind, ok := strings.CutPrefix(p.Topic, DownTopic(l.cfg.DeviceID, ""))
	if !ok {
		l.refuse(p, "message on a topic outside this box's namespace", nil)
		return
	}
	switch kind {
	case "command":
		l.command(ctx, p)
	case "config":
		l.config(ctx, p)
	case "renew":
		env, err := wire.Decode(p.Payload, l.cfg.Limits)
		var r wire.EnrolResponse
		if err == nil && env.Type == wire.TypeEnrolResponse {
			err = wire.DecodeBody(env, &r, l.cfg.Limits)
		} else if err == nil {
			err = fmt.Errorf("envelope type %s", env.Type)
		}
		if err != nil {
			l.refuse(p, "malformed renewal answer", err)
			return
		}
		if l.cfg.Handler != nil {
			l.cfg.Handler.HandleRenewal(ctx, env, r)
		}
	default:
		l.refuse(p, "unknown message kind "+kind, nil)
	}
}

func (l *Link) refuse(p *paho.Publish, why string, err error) {
	l.refused.Add(1)
	l.log.Warn("cloud link: refused a message from the fleet", "topic", p.Topic, "bytes", len(p.Payload), "why", why, "err", err)
}

// command validates, de-duplicates and dispatches one command, and queues
// its result (durably) before the MQTT acknowledgement goes back.
func (l *Link) command(ctx context.Context, p *paho.Publish) {
	env, err := wire.Decode(p.Payload, l.cfg.Limits)
	if err != nil {
		l.refuse(p, "malformed command", err)
		return
	}
	result := func(r wire.CommandResult) {
		r.CommandID = env.ID
		if len(r.Error) > wire.MaxTextLen {
			r.Error = r.Error[:wire.MaxTextLen-3] + "..."
		}
		out, err := wire.New(wire.TypeCommandResult, l.cfg.Now(), r)
		if err == nil {
			var b []byte
			if b, err = wire.Encode(out); err == nil {
				_, err = l.cfg.Outbox.Append(ctx, outbox.StreamCommandResult, b)
			}
		}
		if err != nil {
			l.log.Error("cloud link: could not queue a command result", "command", env.ID, "err", err)
		}
	}
	var cmd wire.Command
	if env.Type != wire.TypeCommand {
		l.refuse(p, "not a command envelope: "+env.Type, nil)
		result(wire.CommandResult{Error: "refused: envelope type " + env.Type + " on the command topic"})
		return
	}
	if err := wire.DecodeBody(env, &cmd, l.cfg.Limits); err != nil {
		l.refuse(p, "malformed command body", err)
		result(wire.CommandResult{Error: "refused: malformed command: " + err.Error()})
		return
	}
	now := l.cfg.Now()
	switch {
	case now.Sub(env.Time) > l.cfg.MaxCommandAge:
		l.refuse(p, "stale command", nil)
		result(wire.CommandResult{Error: fmt.Sprintf("refused: stale (sent %s, older than %s)", env.Time.UTC().Format(time.RFC3339), l.cfg.MaxCommandAge)})
		return
	case env.Time.Sub(now) > time.Minute:
		l.refuse(p, "command from the future", nil)
		result(wire.CommandResult{Error: "refused: sent in the future (clock skew?)"})
		return
	case !cmd.Deadline.IsZero() && now.After(cmd.Deadline):
		l.refuse(p, "command past its deadline", nil)
		result(wire.CommandResult{Error: "refused: past its deadline"})
		return
	}
	first, err := l.cfg.Dedup.FirstSeen(env.ID, env.Time.Add(l.cfg.MaxCommandAge+time.Minute))
	if err != nil {
		l.log.Error("cloud link: dedup store", "err", err)
		return // not acknowledged as handled: the broker redelivers
	}
	if !first {
		l.refuse(p, "replayed command", nil)
		result(wire.CommandResult{Error: "refused: replay of command " + env.ID.String()})
		return
	}
	if l.cfg.Handler == nil {
		result(wire.CommandResult{Error: "no command handler"})
		return
	}
	result(l.cfg.Handler.HandleCommand(ctx, env, cmd))
}

// config hands a desired config to the handler and queues the report.
func (l *Link) config(ctx context.Context, p *paho.Publish) {
	if len(p.Payload) == 0 {
		return // a cleared retained message
	}
	env, err := wire.Decode(p.Payload, l.cfg.Limits)
	if err != nil {
		l.refuse(p, "malformed config", err)
		return
	}
	var want wire.ConfigDesired
	if env.Type != wire.TypeConfigDesired {
		l.refuse(p, "not a config envelope: "+env.Type, nil)
		return
	}
	if err := wire.DecodeBody(env, &want, l.cfg.Limits); err != nil {
		l.refuse(p, "malformed config body", err)
		return
	}
	if l.cfg.Handler == nil {
		return
	}
	rep := l.cfg.Handler.HandleConfig(ctx, env, want)
	if rep.Version == 0 {
		return // nothing to report (already applied)
	}
	if len(rep.Error) > wire.MaxTextLen {
		rep.Error = rep.Error[:wire.MaxTextLen-3] + "..."
	}
	out, err := wire.New(wire.TypeConfigReported, l.cfg.Now(), rep)
	if err == nil {
		var b []byte
		if b, err = wire.Encode(out); err == nil {
			_, err = l.cfg.Outbox.Append(ctx, outbox.StreamConfig, b)
		}
	}
	if err != nil {
		l.log.Error("cloud link: could not queue a config report", "err", err)
	}
}

// countingConn counts the bytes a connection carries. It must stay a
// sync.Locker: paho writes each packet as several Writes (header, then
// body) and holds the conn's lock only if the conn is a sync.Locker.
// Without it, packets that goroutines send at once (every stream's sender
// publishes right after a connect) interleave on the wire; the broker then
// parses a garbled PUBLISH, may acknowledge its packet id — so an entry left
// the outbox although nobody got it — and drops the connection as malformed.
type countingConn struct {
	net.Conn
	sync.Locker
	up, down *atomic.Int64
}

// newCountingConn wraps conn, sharing its write lock when it has one (as
// Dialer's conns do), so that nothing else writing to it can interleave.
func newCountingConn(conn net.Conn, up, down *atomic.Int64) *countingConn {
	lk, ok := conn.(sync.Locker)
	if !ok {
		lk = new(sync.Mutex)
	}
	return &countingConn{Conn: conn, Locker: lk, up: up, down: down}
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.down.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.up.Add(int64(n))
	return n, err
}
