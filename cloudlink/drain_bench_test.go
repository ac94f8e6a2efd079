package cloudlink

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/broker"
	"github.com/outpost-gw/outpost/internal/store"
)

// BenchmarkDrain measures how fast a backlog of 100,000 events (about 200
// bytes each) leaves the box once the broker is reachable: the link draining
// its durable outbox (publish QoS1, delete on PUBACK, batched acks) beside
// the reference, a plain paho client publishing the same messages with QoS1
// one after the other to the same broker, with nothing durable behind it.
// Target: link ≥ 0.7× reference. Run: go test -run X -bench Drain -benchtime 1x ./cloudlink/
func BenchmarkDrain(b *testing.B) {
	const n = 100_000
	payloads := make([][]byte, n)
	for i := range payloads {
		e, _ := wire.New(wire.TypeEvent, time.Now(), wire.Event{Kind: "bench", Severity: "info", Message: fmt.Sprintf("%0150d", i)})
		payloads[i], _ = wire.Encode(e)
	}
	br, err := broker.Start(broker.Options{PlainAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	u, _ := url.Parse("mqtt://" + br.PlainAddr())

	b.Run("reference-plain-qos1", func(b *testing.B) {
		for b.Loop() {
			cm, err := autopaho.NewConnection(context.Background(), autopaho.ClientConfig{ServerUrls: []*url.URL{u}, KeepAlive: 30,
				ClientConfig: paho.ClientConfig{ClientID: "bench-ref"}})
			if err != nil {
				b.Fatal(err)
			}
			cm.AwaitConnection(context.Background())
			start := time.Now()
			for _, p := range payloads {
				if _, err := cm.Publish(context.Background(), &paho.Publish{Topic: "outpost/v1/ref/up/event", QoS: 1, Payload: p}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(n/time.Since(start).Seconds(), "msgs/s")
			cm.Disconnect(context.Background())
		}
	})
	b.Run("link-outbox", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			st, err := store.Open(b.TempDir(), slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			ob, _ := outbox.Open(st, outbox.Options{})
			for i := 0; i < n; i += 1000 {
				if _, err := ob.AppendBatch(context.Background(), outbox.StreamEvent, payloads[i:i+1000]...); err != nil {
					b.Fatal(err)
				}
			}
			l, _ := New(Config{DeviceID: "op-bench", BrokerURL: u, Outbox: ob,
				Certificate: func() (tls.Certificate, error) { return tls.Certificate{}, nil }})
			ctx, cancel := context.WithCancel(context.Background())
			b.StartTimer()
			start := time.Now()
			done := make(chan struct{})
			go func() { l.Run(ctx); close(done) }()
			var depth atomic.Int64
			for {
				s, _ := ob.Stats()
				depth.Store(s.Streams[outbox.StreamEvent].Depth)
				if depth.Load() == 0 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			b.ReportMetric(n/time.Since(start).Seconds(), "msgs/s")
			b.StopTimer()
			cancel()
			<-done
			st.Close()
		}
	})
}
