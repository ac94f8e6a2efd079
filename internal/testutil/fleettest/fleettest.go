// Package fleettest starts, for a test, a fresh fleet and the embedded
// broker enforcing its rules on a loopback mTLS listener.
package fleettest

import (
	"net/url"
	"path/filepath"
	"testing"

	"github.com/outpost-gw/outpost/internal/broker"
	"github.com/outpost-gw/outpost/internal/fleet"
)

// Start makes a fleet in t.TempDir() and its broker; both go with the test.
func Start(t testing.TB) (*fleet.Fleet, *url.URL) {
	t.Helper()
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{
		Name: "t", BrokerURL: "mqtts://127.0.0.1:8883", BrokerHosts: []string{"127.0.0.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	br, err := broker.StartFleet(f, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	return f, br.URL()
}

// StartWSS is Start with the broker also listening for MQTT over WebSocket
// over TLS (the boxes' port-443 path): it returns the mqtts:// and the
// wss://…/mqtt URLs.
func StartWSS(t testing.TB) (f *fleet.Fleet, mqtts, wss *url.URL) {
	t.Helper()
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{
		Name: "t", BrokerURL: "wss://127.0.0.1:443/mqtt", BrokerHosts: []string{"127.0.0.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	o, err := broker.FleetOptions(f, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	o.WSSAddr = "127.0.0.1:0"
	br, err := broker.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { br.Close() })
	return f, br.URL(), br.WSSURL()
}
