package cloudlink

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/broker"
	"github.com/outpost-gw/outpost/internal/store"
)

// received collects what the operator side gets.
type received struct {
	mu   sync.Mutex
	msgs map[string][][]byte // by topic
	ch   chan struct{}
}

func (r *received) add(topic string, payload []byte) {
	r.mu.Lock()
	r.msgs[topic] = append(r.msgs[topic], bytes.Clone(payload))
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *received) get(topic string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.msgs[topic]...)
}

func (r *received) waitFor(t *testing.T, topic string, n int) [][]byte {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if got := r.get(topic); len(got) >= n {
			return got
		}
		select {
		case <-r.ch:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s: got %d messages, want %d", topic, len(r.get(topic)), n)
		}
	}
}

// operator connects to the broker's plain listener and records every
// message under outpost/.
func operator(t *testing.T, addr string) (*autopaho.ConnectionManager, *received) {
	t.Helper()
	r := &received{msgs: map[string][][]byte{}, ch: make(chan struct{}, 1)}
	u, _ := url.Parse("mqtt://" + addr)
	ready := make(chan struct{})
	var once sync.Once
	cm, err := autopaho.NewConnection(t.Context(), autopaho.ClientConfig{
		ServerUrls: []*url.URL{u},
		KeepAlive:  30,
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			cm.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "outpost/#", QoS: 1}}})
			once.Do(func() { close(ready) })
		},
		ClientConfig: paho.ClientConfig{
			ClientID: "operator-test",
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				r.add(pr.Packet.Topic, pr.Packet.Payload)
				return true, nil
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("operator did not connect")
	}
	time.Sleep(100 * time.Millisecond) // let the subscription settle
	return cm, r
}

type handlerFunc func(ctx context.Context, env wire.Envelope, cmd wire.Command) wire.CommandResult

func (f handlerFunc) HandleCommand(ctx context.Context, env wire.Envelope, cmd wire.Command) wire.CommandResult {
	return f(ctx, env, cmd)
}

func (f handlerFunc) HandleConfig(context.Context, wire.Envelope, wire.ConfigDesired) wire.ConfigReported {
	return wire.ConfigReported{}
}

func (f handlerFunc) HandleRenewal(context.Context, wire.Envelope, wire.EnrolResponse) {}

type testBox struct {
	link *Link
	ob   *outbox.Outbox
	st   *store.Store
	stop func()
}

func startBox(t *testing.T, addr, device string, h Handler) *testBox {
	t.Helper()
	st, err := store.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.Open(st, outbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("mqtt://" + addr)
	l, err := New(Config{
		DeviceID:    device,
		BrokerURL:   u,
		Certificate: func() (tls.Certificate, error) { return tls.Certificate{}, nil },
		Outbox:      ob,
		Handler:     h,
		Dedup:       &StoreDedup{Store: st, Now: time.Now},
		MinBackoff:  50 * time.Millisecond,
		MaxBackoff:  time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	b := &testBox{link: l, ob: ob, st: st}
	b.stop = func() { cancel(); <-done; st.Close() }
	t.Cleanup(func() {
		if ctx.Err() == nil {
			b.stop()
		}
	})
	return b
}

func envelope(t *testing.T, typ string, at time.Time, body any) []byte {
	t.Helper()
	e, err := wire.New(typ, at, body)
	if err != nil {
		t.Fatal(err)
	}
	b, err := wire.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLinkDeliversOutboxInOrder(t *testing.T) {
	br, err := broker.Start(broker.Options{PlainAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	_, ops := operator(t, br.PlainAddr())
	const dev = "op-test0000000000001"
	box := startBox(t, br.PlainAddr(), dev, nil)
	const n = 500
	for i := range n {
		p := envelope(t, wire.TypeEvent, time.Now(), wire.Event{Kind: "test", Severity: "info", Message: fmt.Sprint(i)})
		if _, err := box.ob.Append(context.Background(), outbox.StreamEvent, p); err != nil {
			t.Fatal(err)
		}
	}
	got := ops.waitFor(t, UpTopic(dev, outbox.StreamEvent), n)
	for i, p := range got[:n] {
		env, err := wire.Decode(p, wire.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		var ev wire.Event
		wire.DecodeBody(env, &ev, wire.DefaultLimits())
		if ev.Message != fmt.Sprint(i) {
			t.Fatalf("message %d is %q: out of order", i, ev.Message)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := box.ob.Stats()
		if st.Streams[outbox.StreamEvent].Depth == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox not emptied after delivery: %+v", st.Streams[outbox.StreamEvent])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := box.link.Stats(); s.State != StateOnline || s.Published < n {
		t.Errorf("stats %+v", s)
	}
}

func TestLinkCommands(t *testing.T) {
	br, err := broker.Start(broker.Options{PlainAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	opCM, ops := operator(t, br.PlainAddr())
	const dev = "op-test0000000000002"
	var mu sync.Mutex
	var ran []string
	startBox(t, br.PlainAddr(), dev, handlerFunc(func(_ context.Context, env wire.Envelope, cmd wire.Command) wire.CommandResult {
		mu.Lock()
		ran = append(ran, cmd.Name)
		mu.Unlock()
		return wire.CommandResult{OK: true}
	}))
	deadline := time.Now().Add(10 * time.Second)
	for len(ops.get(StatusTopic(dev))) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	send := func(payload []byte) {
		if _, err := opCM.Publish(context.Background(), &paho.Publish{Topic: DownTopic(dev, "command"), QoS: 1, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	cmd := func(name string, at time.Time) []byte {
		return envelope(t, wire.TypeCommand, at, wire.Command{Name: name, Deadline: at.Add(5 * time.Minute)})
	}
	good := cmd("ping", time.Now())
	stale := cmd("stale", time.Now().Add(-time.Hour))
	future := cmd("future", time.Now().Add(time.Hour))
	wrongType := envelope(t, wire.TypeEvent, time.Now(), wire.Event{Kind: "x", Severity: "info"})
	for _, p := range [][]byte{
		good, good, // the second is a replay
		stale, future, wrongType,
		{0xdd, 0xff, 0xff, 0xff, 0xff}, // msgpack's 5-byte killer
		{0xc1}, nil, bytes.Repeat([]byte{0x91}, 100000),
	} {
		send(p)
	}
	good2 := cmd("ping2", time.Now())
	send(good2) // the link is still up and serving
	results := ops.waitFor(t, UpTopic(dev, outbox.StreamCommandResult), 6)
	var oks, refused int
	for _, p := range results {
		env, err := wire.Decode(p, wire.DefaultLimits())
		if err != nil {
			t.Fatal(err)
		}
		var r wire.CommandResult
		if err := wire.DecodeBody(env, &r, wire.DefaultLimits()); err != nil {
			t.Fatal(err)
		}
		if r.OK {
			oks++
		} else {
			refused++
			t.Logf("refused: %s", r.Error)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(ran) != "[ping ping2]" || oks != 2 || refused != 4 {
		t.Errorf("ran %v, %d ok, %d refused results; want [ping ping2], 2, 4", ran, oks, refused)
	}
}
