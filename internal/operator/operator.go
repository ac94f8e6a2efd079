// Package operator is the fleet operator's MQTT client: it connects to the
// fleet's broker with the operator certificate and claims boxes, sends them
// commands and follows what they report. The outpost CLI's fleet commands
// and the demo use it.
package operator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/outpost-gw/outpost/cloudlink"
	"github.com/outpost-gw/outpost/cloudlink/identity"
	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/fleet"
)

// Message is one message a box sent, as the operator sees it.
type Message struct {
	Device string
	Stream string // telemetry, event, audit, status, command_result, ...
	Env    wire.Envelope
	Raw    []byte
}

// Operator is a connected operator client.
type Operator struct {
	f   *fleet.Fleet
	log *slog.Logger
	cm  *autopaho.ConnectionManager

	mu       sync.Mutex
	requests map[string]wire.EnrolRequest // pending enrolment requests by device
	subs     []func(Message)
	waiters  map[wire.ID]chan wire.CommandResult
}

// Options for Connect.
type Options struct {
	BrokerURL *url.URL
	// ClientID defaults to "operator-<random>"; a fixed id with
	// Persistent keeps a session, so nothing boxes sent while the operator
	// was away is lost.
	ClientID   string
	Persistent bool
	Log        *slog.Logger
	// OnMessage and ServeRenewals take effect before the connection is up:
	// with a persistent session, what waited at the broker arrives at once
	// and would otherwise find nobody listening (and be acknowledged anyway).
	OnMessage     func(Message)
	ServeRenewals bool
}

// Connect connects to the broker as the fleet operator and subscribes to
// everything boxes send and to pending enrolment requests. ctx bounds the
// connection's whole life, not only the connecting.
func Connect(ctx context.Context, f *fleet.Fleet, o Options) (*Operator, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.ClientID == "" {
		o.ClientID = fmt.Sprintf("operator-%d", time.Now().UnixNano())
	}
	cf, kf := f.OperatorCertFiles()
	cert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		return nil, fmt.Errorf("operator certificate: %w", err)
	}
	op := &Operator{f: f, log: o.Log, requests: map[string]wire.EnrolRequest{}, waiters: map[wire.ID]chan wire.CommandResult{}}
	if o.OnMessage != nil {
		op.subs = append(op.subs, o.OnMessage)
	}
	if o.ServeRenewals {
		op.subs = append(op.subs, func(m Message) { op.renew(ctx, m) })
	}
	up := make(chan error, 1)
	var session uint32
	if o.Persistent {
		session = 7 * 24 * 3600
	}
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{o.BrokerURL},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: !o.Persistent,
		SessionExpiryInterval:         session,
		ReconnectBackoff:              autopaho.NewExponentialBackoff(200*time.Millisecond, 10*time.Second, 500*time.Millisecond, 2),
		AttemptConnection: func(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
			d := &cloudlink.Dialer{TLS: &tls.Config{RootCAs: f.CAPool(), Certificates: []tls.Certificate{cert}}}
			return d.Dial(ctx, u)
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				_, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
					{Topic: cloudlink.TopicRoot + "/+/up/#", QoS: 1},
					{Topic: cloudlink.TopicRoot + "/enrol/+/request", QoS: 1},
				}})
				select {
				case up <- err:
				default:
				}
			}()
		},
		OnConnectError: func(err error) {
			o.Log.Warn("operator: connection attempt failed", "err", err)
			select {
			case up <- err:
			default:
			}
		},
		ClientConfig: paho.ClientConfig{
			ClientID: o.ClientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				op.receive(pr.Packet)
				return true, nil
			}},
		},
	})
	if err != nil {
		return nil, err
	}
	op.cm = cm
	select {
	case err := <-up:
		if err != nil {
			cm.Disconnect(context.Background())
			return nil, fmt.Errorf("operator: %w", err)
		}
	case <-time.After(15 * time.Second):
		cm.Disconnect(context.Background())
		return nil, errors.New("operator: broker did not answer within 15 s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return op, nil
}

// Close disconnects.
func (op *Operator) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return op.cm.Disconnect(ctx)
}

// Subscribe calls fn for every message boxes send from now on.
func (op *Operator) Subscribe(fn func(Message)) {
	op.mu.Lock()
	op.subs = append(op.subs, fn)
	op.mu.Unlock()
}

func (op *Operator) receive(p *paho.Publish) {
	rest, ok := strings.CutPrefix(p.Topic, cloudlink.TopicRoot+"/")
	if !ok || len(p.Payload) == 0 {
		return
	}
	parts := strings.Split(rest, "/")
	env, err := wire.Decode(p.Payload, wire.DefaultLimits())
	if err != nil {
		op.log.Warn("operator: malformed message", "topic", p.Topic, "err", err)
		return
	}
	if len(parts) == 3 && parts[0] == "enrol" && parts[2] == "request" {
		var r wire.EnrolRequest
		if env.Type != wire.TypeEnrolRequest || wire.DecodeBody(env, &r, wire.DefaultLimits()) != nil || r.DeviceID != parts[1] {
			return
		}
		if _, err := fleet.CheckEnrolRequest(r.DeviceID, r.ClaimCode, r.CSR); err != nil {
			op.log.Warn("operator: enrolment request dropped: its key does not give its id and claim code", "device", r.DeviceID, "err", err)
			return
		}
		op.mu.Lock()
		if _, known := op.requests[r.DeviceID]; !known && len(op.requests) >= maxPending {
			op.mu.Unlock()
			op.log.Warn("operator: enrolment request dropped: too many pending", "device", r.DeviceID, "pending", maxPending)
			return
		}
		op.requests[r.DeviceID] = r
		op.mu.Unlock()
		return
	}
	if len(parts) != 3 || parts[1] != "up" {
		return
	}
	m := Message{Device: parts[0], Stream: parts[2], Env: env, Raw: p.Payload}
	op.mu.Lock()
	subs := append([]func(Message){}, op.subs...)
	var waiter chan wire.CommandResult
	if m.Stream == "command_result" {
		var r wire.CommandResult
		if wire.DecodeBody(env, &r, wire.DefaultLimits()) == nil {
			if waiter = op.waiters[r.CommandID]; waiter != nil {
				delete(op.waiters, r.CommandID)
				waiter <- r
			}
		}
	}
	op.mu.Unlock()
	for _, fn := range subs {
		fn(m)
	}
}

// Pending lists enrolment requests seen so far (device id → claim code).
func (op *Operator) Pending() map[string]string {
	op.mu.Lock()
	defer op.mu.Unlock()
	out := map[string]string{}
	for id, r := range op.requests {
		out[id] = r.ClaimCode
	}
	return out
}

// ErrNoSuchClaim means no box asked to be enrolled with that code.
var ErrNoSuchClaim = errors.New("no box waiting for enrolment has this claim code")

// ErrAmbiguousClaim means several boxes asked with the same code: since the
// code comes from the box's key, one of them ground a key to match it.
// Nothing is claimed; compare the device ids with the box's LAN page.
var ErrAmbiguousClaim = errors.New("several boxes asked to be enrolled with this claim code")

// maxPending bounds the pending enrolment requests kept (a flood of
// requests cannot exhaust the operator's memory).
const maxPending = 4096

// Claim enrols the box whose claim code is code: it waits up to wait for
// the box's request, signs its certificate and answers it (retained).
func (op *Operator) Claim(ctx context.Context, code, group string, wait time.Duration) (string, error) {
	code = identity.NormalizeClaimCode(code)
	deadline := time.Now().Add(wait)
	for {
		op.mu.Lock()
		var req *wire.EnrolRequest
		var ids []string
		for _, r := range op.requests {
			if identity.NormalizeClaimCode(r.ClaimCode) == code {
				r := r
				req = &r
				ids = append(ids, r.DeviceID)
			}
		}
		op.mu.Unlock()
		if len(ids) > 1 {
			return "", fmt.Errorf("%w: %s (%s)", ErrAmbiguousClaim, code, strings.Join(ids, ", "))
		}
		if req != nil {
			return req.DeviceID, op.answer(ctx, *req, group)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%w: %s", ErrNoSuchClaim, code)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ClaimAll enrols every box that asks (the demo's self-enrolment).
func (op *Operator) ClaimAll(ctx context.Context) {
	for ctx.Err() == nil {
		op.mu.Lock()
		var reqs []wire.EnrolRequest
		for _, r := range op.requests {
			reqs = append(reqs, r)
		}
		op.mu.Unlock()
		for _, r := range reqs {
			if err := op.answer(ctx, r, "demo"); err != nil {
				op.log.Warn("operator: auto-claim failed", "device", r.DeviceID, "err", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (op *Operator) answer(ctx context.Context, r wire.EnrolRequest, group string) error {
	resp := wire.EnrolResponse{DeviceID: r.DeviceID}
	chain, err := op.f.Enrol(r.DeviceID, r.ClaimCode, r.CSR, group)
	if err != nil {
		resp.Error = err.Error()
	} else {
		resp.CertPEM = chain
		resp.CAPEM = op.f.CAPEM()
	}
	env, err2 := wire.New(wire.TypeEnrolResponse, time.Now(), resp)
	if err2 != nil {
		return err2
	}
	b, err2 := wire.Encode(env)
	if err2 != nil {
		return err2
	}
	if _, err2 := op.cm.Publish(ctx, &paho.Publish{Topic: cloudlink.EnrolResponseTopic(r.DeviceID), QoS: 1, Retain: true, Payload: b}); err2 != nil {
		return err2
	}
	// The request is answered: clear it (an empty retained message).
	op.cm.Publish(ctx, &paho.Publish{Topic: cloudlink.EnrolRequestTopic(r.DeviceID), QoS: 1, Retain: true})
	op.mu.Lock()
	delete(op.requests, r.DeviceID)
	op.mu.Unlock()
	return err
}

// Command sends a command to a box and waits for its result.
func (op *Operator) Command(ctx context.Context, device, name string, args any, timeout time.Duration) (wire.CommandResult, error) {
	cmd := wire.Command{Name: name, Deadline: time.Now().Add(timeout)}
	if args != nil {
		b, err := msgpack.Marshal(args)
		if err != nil {
			return wire.CommandResult{}, err
		}
		cmd.Args = b
	}
	env, err := wire.New(wire.TypeCommand, time.Now(), cmd)
	if err != nil {
		return wire.CommandResult{}, err
	}
	b, err := wire.Encode(env)
	if err != nil {
		return wire.CommandResult{}, err
	}
	ch := make(chan wire.CommandResult, 1)
	op.mu.Lock()
	op.waiters[env.ID] = ch
	op.mu.Unlock()
	defer func() {
		op.mu.Lock()
		delete(op.waiters, env.ID)
		op.mu.Unlock()
	}()
	if _, err := op.cm.Publish(ctx, &paho.Publish{
		Topic: cloudlink.DownTopic(device, "command"), QoS: 1, Payload: b,
		Properties: &paho.PublishProperties{
			ResponseTopic:   cloudlink.UpTopic(device, outbox.StreamCommandResult),
			CorrelationData: env.ID[:],
		},
	}); err != nil {
		return wire.CommandResult{}, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-time.After(timeout):
		return wire.CommandResult{}, fmt.Errorf("no answer from %s within %v (the command stays queued at the broker until it expires)", device, timeout)
	case <-ctx.Done():
		return wire.CommandResult{}, ctx.Err()
	}
}

// PushConfig sends a box its desired config (retained, so a box that is
// offline gets it when it connects).
func (op *Operator) PushConfig(ctx context.Context, device string, d fleet.DesiredConfig) error {
	env, err := wire.New(wire.TypeConfigDesired, time.Now(), wire.ConfigDesired{Version: d.Version, Config: d.Config})
	if err != nil {
		return err
	}
	b, err := wire.Encode(env)
	if err != nil {
		return err
	}
	_, err = op.cm.Publish(ctx, &paho.Publish{Topic: cloudlink.DownTopic(device, "config"), QoS: 1, Retain: true, Payload: b})
	return err
}

// ServeRenewals answers boxes that ask for a new certificate over their
// authenticated connection (the broker's ACL proves the id in the topic).
// With a persistent session, use Options.ServeRenewals instead.
func (op *Operator) ServeRenewals(ctx context.Context) {
	op.Subscribe(func(m Message) { op.renew(ctx, m) })
}

func (op *Operator) renew(ctx context.Context, m Message) {
	if m.Stream != "renew" {
		return
	}
	var r wire.EnrolRequest
	resp := wire.EnrolResponse{DeviceID: m.Device}
	if m.Env.Type != wire.TypeEnrolRequest || wire.DecodeBody(m.Env, &r, wire.DefaultLimits()) != nil {
		resp.Error = "malformed renewal request"
	} else if chain, err := op.f.Renew(m.Device, r.CSR); err != nil {
		resp.Error = err.Error()
	} else {
		resp.CertPEM, resp.CAPEM = chain, op.f.CAPEM()
	}
	env, err := wire.New(wire.TypeEnrolResponse, time.Now(), resp)
	if err != nil {
		op.log.Warn("operator: renewal answer", "device", m.Device, "err", err)
		return
	}
	b, _ := wire.Encode(env)
	go func() {
		if _, err := op.cm.Publish(ctx, &paho.Publish{Topic: cloudlink.DownTopic(m.Device, "renew"), QoS: 1, Payload: b}); err != nil {
			op.log.Warn("operator: renewal answer not sent", "device", m.Device, "err", err)
		}
	}()
	op.log.Info("operator: renewed a box's certificate", "device", m.Device, "error", resp.Error)
}
