package daemon

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-gw/outpost/internal/broker"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/fleet"
)

func testFleetBroker(t *testing.T) (*fleet.Fleet, *url.URL) {
	t.Helper()
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{Name: "t", BrokerURL: "mqtts://127.0.0.1:8883", BrokerHosts: []string{"127.0.0.1"}})
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

// writeFleetFile writes f's fleet file pointing at the test broker.
func writeFleetFile(t *testing.T, f *fleet.Fleet, broker *url.URL, path string) {
	t.Helper()
	ff, err := config.LoadFleet(f.FleetFilePath())
	if err != nil {
		t.Fatal(err)
	}
	ff.BrokerURL = broker.String()
	b, _ := json.Marshal(ff)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
