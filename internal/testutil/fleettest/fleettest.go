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
