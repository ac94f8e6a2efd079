package cloudlink_test

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/cloudlink"
	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/internal/testutil/fleettest"
)

// TestLinkOverWebSocket: the port-443 path against a real MQTT broker. A box
// claimed and linked over wss://…/mqtt (mTLS client certificate inside the
// WebSocket's TLS, the broker's fleet rules) goes online, its event reaches
// the operator (on the mqtts listener), and its outbox drains.
func TestLinkOverWebSocket(t *testing.T) {
	f, mqtts, wss := fleettest.StartWSS(t)
	op, err := operator.Connect(context.Background(), f, operator.Options{BrokerURL: mqtts})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	msgs := make(chan operator.Message, 100)
	op.Subscribe(func(m operator.Message) { msgs <- m })

	a := enrolBox(t, f, wss, op)
	waitState(t, a.link, cloudlink.StateOnline)
	ev, _ := wire.New(wire.TypeEvent, time.Now(), wire.Event{Kind: "hello", Severity: "info", Message: "over wss"})
	b, _ := wire.Encode(ev)
	if _, err := a.ob.Append(context.Background(), outbox.StreamEvent, b); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for got := false; !got; {
		select {
		case m := <-msgs:
			got = m.Device == a.id.DeviceID() && m.Stream == "event" && m.Env.ID == ev.ID
		case <-deadline:
			t.Fatalf("operator did not receive the box's event (link %+v)", a.link.Stats())
		}
	}
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, _ := a.ob.Stats()
		if st.Streams[outbox.StreamEvent].Depth == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("outbox not drained: %+v", st.Streams[outbox.StreamEvent])
		}
	}
	if s := a.link.Stats(); s.State != cloudlink.StateOnline || s.Published < 1 {
		t.Errorf("link stats %+v", s)
	}
}
