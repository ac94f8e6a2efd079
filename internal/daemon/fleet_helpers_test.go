package daemon

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/operator"
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

// claim enrols the running box through op, by the claim code its status
// shows, and returns its device id.
func claim(t *testing.T, r *running, op *operator.Operator) string {
	t.Helper()
	var s Status
	getJSON(t, "https://"+r.ep.HTTPS+"/api/v1/status", &s)
	dev, err := op.Claim(context.Background(), s.Cloud.ClaimCode, "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return dev
}

// waitOnline waits until the box is enrolled and its cloud link online.
func waitOnline(t *testing.T, r *running, timeout time.Duration) Status {
	t.Helper()
	var s Status
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		getJSON(t, "https://"+r.ep.HTTPS+"/api/v1/status", &s)
		if s.Cloud.Enrolled && s.Cloud.State == "online" {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("not online: %+v", s.Cloud)
		}
	}
}
