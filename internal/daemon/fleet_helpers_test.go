package daemon

import (
	"encoding/json"
	"net/url"
	"os"
	"testing"

	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/testutil/fleettest"
)

func testFleetBroker(t *testing.T) (*fleet.Fleet, *url.URL) { return fleettest.Start(t) }

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
