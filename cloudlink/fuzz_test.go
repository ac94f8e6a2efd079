package cloudlink

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/store"
)

type nopHandler struct{}

func (nopHandler) HandleCommand(context.Context, wire.Envelope, wire.Command) wire.CommandResult {
	return wire.CommandResult{OK: true}
}
func (nopHandler) HandleConfig(_ context.Context, _ wire.Envelope, c wire.ConfigDesired) wire.ConfigReported {
	return wire.ConfigReported{Version: c.Version, Applied: true}
}
func (nopHandler) HandleRenewal(context.Context, wire.Envelope, wire.EnrolResponse) {}

// FuzzReceive feeds arbitrary bytes to every handler of what the fleet
// sends (command, config, renewal, unknown kinds): nothing may panic, and
// whatever is accepted leaves well-formed messages in the outbox.
func FuzzReceive(f *testing.F) {
	now := time.Now()
	seed := func(kind byte, typ string, body any) {
		e, err := wire.New(typ, now, body)
		if err != nil {
			f.Fatal(err)
		}
		b, _ := wire.Encode(e)
		f.Add(kind, b)
	}
	seed(0, wire.TypeCommand, wire.Command{Name: "ping", Deadline: now.Add(time.Minute)})
	seed(1, wire.TypeConfigDesired, wire.ConfigDesired{Version: 3, Config: []byte(`{"config_version":1}`)})
	seed(2, wire.TypeEnrolResponse, wire.EnrolResponse{DeviceID: "op-fuzz", Error: "no"})
	seed(0, wire.TypeEvent, wire.Event{Kind: "x", Severity: "info"})
	f.Add(byte(0), []byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add(byte(1), []byte{0x95, 0x01})
	f.Add(byte(3), []byte{})

	st, err := store.Open(f.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	ob, _ := outbox.Open(st, outbox.Options{BudgetBytes: 1 << 20})
	u, _ := url.Parse("mqtt://127.0.0.1:1")
	l, err := New(Config{DeviceID: "op-fuzz", BrokerURL: u, Outbox: ob, Handler: nopHandler{},
		Certificate: func() (tls.Certificate, error) { return tls.Certificate{}, nil }})
	if err != nil {
		f.Fatal(err)
	}
	kinds := []string{"command", "config", "renew", "bogus"}
	f.Fuzz(func(t *testing.T, kind byte, payload []byte) {
		topic := DownTopic("op-fuzz", kinds[int(kind)%len(kinds)])
		l.receive(context.Background(), paho.PublishReceived{Packet: &paho.Publish{Topic: topic, Payload: payload}})
		for _, s := range []outbox.Stream{outbox.StreamCommandResult, outbox.StreamConfig} {
			es, err := ob.Next(s, 0, 16)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				if _, err := wire.Decode(e.Payload, wire.DefaultLimits()); err != nil {
					t.Fatalf("the link queued a malformed %s: %v", s, err)
				}
				ob.Ack(context.Background(), s, e.Seq)
			}
		}
	})
}
