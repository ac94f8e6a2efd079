package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/hardware"
	"github.com/outpost-gw/outpost/hardware/hardwaretest"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/internal/store"
)

func testConfig() *config.Config {
	c := config.Default()
	c.LAN.HTTPSAddr = "127.0.0.1:0"
	c.LAN.HTTPAddr = "127.0.0.1:0"
	c.Recorder.LiveRTSPAddr = "127.0.0.1:0"
	c.Watchdog.Interval = config.Duration(100 * time.Millisecond)
	c.Recorder.MinFreeMB = 0 // the fake disk is small
	return &c
}

type running struct {
	ready  chan Endpoints // later starts (after a restart)
	ep     Endpoints
	cancel context.CancelFunc
	done   chan error
	wd     *hardwaretest.Watchdog
	d      *daemon // the latest start's
}

func start(t *testing.T, o Options) *running {
	t.Helper()
	r := &running{done: make(chan error, 1), wd: &hardwaretest.Watchdog{}}
	ready := make(chan Endpoints, 1)
	r.ready = ready
	o.Ready = func(ep Endpoints) {
		select {
		case ready <- ep:
		default:
		}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Root = fstest.MapFS{"proc/sys/kernel/random/boot_id": {Data: []byte("b00t-1d\n")}}
	o.Sensors = &hardwaretest.Sensors{
		DiskFunc: func(string) (hardware.DiskUsage, error) {
			return hardware.DiskUsage{TotalBytes: 1 << 30, AvailBytes: 1 << 29}, nil
		},
	}
	o.OpenWatchdog = func(string) (hardware.Watchdog, error) { return r.wd, nil }
	o.started = func(d *daemon) { r.d = d }
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- Run(ctx, o) }()
	select {
	case r.ep = <-ready:
	case err := <-r.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not come up")
	}
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

func insecureClient() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       5 * time.Second,
	}
}

func TestRunServesHealthAndShutsDownCleanly(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	r := start(t, Options{Config: testConfig(), DataDir: data})
	c := insecureClient()

	resp, err := c.Get("https://" + r.ep.HTTPS + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var h Health
	json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if resp.StatusCode != 200 || h.Version == "" || h.BootID != "b00t-1d" {
		t.Errorf("healthz = %d %+v", resp.StatusCode, h)
	}

	resp, err = c.Get("http://" + r.ep.HTTP + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusMovedPermanently || !strings.HasPrefix(loc, "https://") {
		t.Errorf("http → %d %q, want a redirect to https", resp.StatusCode, loc)
	}

	resp, err = c.Get("https://" + r.ep.HTTPS + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	var s Status
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if s.DataDir.TotalBytes != 1<<30 {
		t.Errorf("status = %+v", s)
	}

	deadline := time.Now().Add(5 * time.Second)
	for r.wd.Pings() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if r.wd.Pings() == 0 {
		t.Error("watchdog never petted while checks pass")
	}
	r.stop(t)
	if r.wd.Closes() != 1 {
		t.Errorf("watchdog closes = %d, want a magic close on shutdown", r.wd.Closes())
	}
	// The store was closed: it opens again at once (bbolt holds a lock).
	st, err := store.Open(data, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("store not closed cleanly: %v", err)
	}
	st.Close()

	// A second start counts a second boot and keeps the certificate.
	key1, _ := os.ReadFile(filepath.Join(data, "tls", "lan.key"))
	r = start(t, Options{Config: testConfig(), DataDir: data})
	r.stop(t)
	key2, _ := os.ReadFile(filepath.Join(data, "tls", "lan.key"))
	if string(key1) != string(key2) || len(key1) == 0 {
		t.Error("LAN key changed across restarts")
	}
}

func TestBadConfigLeavesDataDirUntouched(t *testing.T) {
	for _, tc := range []struct {
		name, doc, field string
	}{
		{"unknown field", `{"config_version":1,"lan":{"https":":443"}}`, `"lan.https"`},
		{"wrong type", `{"config_version":1,"log_level":3}`, `"log_level"`},
		{"missing required", `{"log_level":"info"}`, `"config_version"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "config.json")
			os.WriteFile(cfgPath, []byte(tc.doc), 0o600)
			data := filepath.Join(dir, "data")
			err := Run(context.Background(), Options{ConfigPath: cfgPath, DataDir: data, Log: slog.New(slog.DiscardHandler)})
			if err == nil || !strings.Contains(err.Error(), tc.field) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Run = %v, want one line naming %s", err, tc.field)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("data dir was created or touched: %v", err)
			}
		})
	}
}

func TestBadFleetFileStopsStartup(t *testing.T) {
	dir := t.TempDir()
	fleet := filepath.Join(dir, "fleet.json")
	os.WriteFile(fleet, []byte(`{"name":"acme"}`), 0o600)
	err := Run(context.Background(), Options{Config: testConfig(), FleetPath: fleet, DataDir: filepath.Join(dir, "d"), Log: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "broker_url") {
		t.Fatalf("Run = %v", err)
	}
}

func TestFleetFileReadable(t *testing.T) {
	dir := t.TempDir()
	fleet := filepath.Join(dir, "fleet.json")
	os.WriteFile(fleet, []byte(`{"name":"acme","broker_url":"mqtts://broker.acme.example:8883"}`), 0o600)
	r := start(t, Options{Config: testConfig(), FleetPath: fleet, DataDir: filepath.Join(dir, "d")})
	defer r.stop(t)
	resp, err := insecureClient().Get("https://" + r.ep.HTTPS + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s Status
	json.NewDecoder(resp.Body).Decode(&s)
	if s.Fleet != "acme" {
		t.Errorf("status fleet = %q", s.Fleet)
	}
}

// TestCloudEnrolAndCommand: with a fleet file, the daemon shows its claim
// code, enrols when the operator claims it, and answers commands.
func TestCloudEnrolAndCommand(t *testing.T) {
	f, brokerURL := testFleetBroker(t)
	dir := t.TempDir()
	fleetPath := filepath.Join(dir, "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	r := start(t, Options{Config: testConfig(), FleetPath: fleetPath, DataDir: filepath.Join(dir, "d")})
	defer r.stop(t)

	var s Status
	getJSON(t, "https://"+r.ep.HTTPS+"/api/v1/status", &s)
	if s.Cloud == nil || s.Cloud.ClaimCode == "" || s.Cloud.Enrolled {
		t.Fatalf("status before claim: %+v", s.Cloud)
	}
	op, err := operator.Connect(context.Background(), f, operator.Options{BrokerURL: brokerURL})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	dev := claim(t, r, op)
	s = waitOnline(t, r, 15*time.Second)
	res, err := op.Command(context.Background(), dev, "ping", nil, 10*time.Second)
	if err != nil || !res.OK {
		t.Fatalf("ping: %+v %v", res, err)
	}
	res, err = op.Command(context.Background(), dev, "format_disk", nil, 10*time.Second)
	if err != nil || res.OK || !strings.Contains(res.Error, "unknown command") {
		t.Fatalf("unknown command: %+v %v", res, err)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := insecureClient().Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// TestConfigPush: a pushed config is refused when invalid or older, and
// applied (the daemon restarts on it) when valid; the box reports each.
func TestConfigPush(t *testing.T) {
	f, brokerURL := testFleetBroker(t)
	dir := t.TempDir()
	fleetPath := filepath.Join(dir, "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	data := filepath.Join(dir, "d")
	r := start(t, Options{Config: testConfig(), FleetPath: fleetPath, DataDir: data})
	defer r.stop(t)
	op, err := operator.Connect(context.Background(), f, operator.Options{BrokerURL: brokerURL})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	reports := make(chan wire.ConfigReported, 10)
	op.Subscribe(func(m operator.Message) {
		var rep wire.ConfigReported
		if m.Stream == "config.reported" && wire.DecodeBody(m.Env, &rep, wire.DefaultLimits()) == nil {
			reports <- rep
		}
	})
	var s Status
	getJSON(t, "https://"+r.ep.HTTPS+"/api/v1/status", &s)
	dev, err := op.Claim(context.Background(), s.Cloud.ClaimCode, "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wait := func() wire.ConfigReported {
		t.Helper()
		select {
		case rep := <-reports:
			return rep
		case <-time.After(20 * time.Second):
			t.Fatal("no config report")
		}
		return wire.ConfigReported{}
	}
	// An invalid document never gets past the fleet side; send one anyway,
	// as a hostile or buggy fleet might.
	if err := op.PushConfig(context.Background(), dev, fleet.DesiredConfig{Version: 5, Config: []byte(`{"config_version":1,"lan":{"https_addr":7}}`)}); err != nil {
		t.Fatal(err)
	}
	if rep := wait(); rep.Applied || rep.Version != 5 || !strings.Contains(rep.Error, "lan.https_addr") {
		t.Fatalf("bad config report: %+v", rep)
	}
	good := []byte(`{"config_version":1,"log_level":"debug","lan":{"https_addr":"127.0.0.1:0","http_addr":""},"watchdog":{"disabled":true},"cloud":{"telemetry_interval":"5s"}}`)
	if err := op.PushConfig(context.Background(), dev, fleet.DesiredConfig{Version: 6, Config: good}); err != nil {
		t.Fatal(err)
	}
	if rep := wait(); !rep.Applied || rep.Version != 6 {
		t.Fatalf("good config report: %+v", rep)
	}
	var ep Endpoints
	select {
	case ep = <-r.ready:
	case <-time.After(20 * time.Second):
		t.Fatal("daemon did not restart on the new config")
	}
	r.ep = ep
	if b, _ := os.ReadFile(filepath.Join(data, PushedConfigFile)); string(b) != string(good) {
		t.Errorf("pushed config not kept: %s", b)
	}
	if err := op.PushConfig(context.Background(), dev, fleet.DesiredConfig{Version: 4, Config: good}); err != nil {
		t.Fatal(err)
	}
	if rep := wait(); rep.Applied || !strings.Contains(rep.Error, "older") {
		t.Fatalf("older config report: %+v", rep)
	}
}

// TestCertificateRenewal: past renew_after the box gets a new key and
// certificate from the fleet over its own authenticated link.
func TestCertificateRenewal(t *testing.T) {
	f, brokerURL := testFleetBroker(t)
	dir := t.TempDir()
	fleetPath := filepath.Join(dir, "fleet.json")
	writeFleetFile(t, f, brokerURL, fleetPath)
	cfg := testConfig()
	cfg.Cloud.RenewAfter = config.Duration(2 * time.Second)
	data := filepath.Join(dir, "d")
	r := start(t, Options{Config: cfg, FleetPath: fleetPath, DataDir: data})
	defer r.stop(t)
	op, err := operator.Connect(context.Background(), f, operator.Options{BrokerURL: brokerURL})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	op.ServeRenewals(context.Background())
	var s Status
	getJSON(t, "https://"+r.ep.HTTPS+"/api/v1/status", &s)
	dev, err := op.Claim(context.Background(), s.Cloud.ClaimCode, "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pemPath := filepath.Join(data, "identity", "device.pem")
	var first []byte
	for deadline := time.Now().Add(10 * time.Second); len(first) == 0 || !bytes.Contains(first, []byte("CERTIFICATE")); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not enrolled")
		}
		first, _ = os.ReadFile(pemPath)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		devs, _ := f.Devices()
		now, _ := os.ReadFile(pemPath)
		if len(devs) == 1 && len(devs[0].Serials) >= 2 && !bytes.Equal(now, first) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no renewal: registry %+v", devs)
		}
	}
	if res, err := op.Command(context.Background(), dev, "ping", nil, 10*time.Second); err != nil || !res.OK {
		t.Fatalf("ping after renewal: %+v %v", res, err)
	}
}

// TestPushedConfigFailingAtStartFallsBack: a pushed config that validates
// but cannot start (its LAN address is taken) is set aside, and the daemon
// comes up on the image's config and reports why.
func TestPushedConfigFailingAtStartFallsBack(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	bad := testConfig()
	bad.LAN.HTTPSAddr = held.Addr().String()
	doc, err := json.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(doc); err != nil {
		t.Fatalf("the pushed config should be valid: %v", err)
	}
	if err := os.WriteFile(filepath.Join(data, PushedConfigFile), doc, 0o600); err != nil {
		t.Fatal(err)
	}
	r := start(t, Options{Config: testConfig(), DataDir: data})
	if r.ep.HTTPS == held.Addr().String() {
		t.Fatal("the daemon runs on the failing config")
	}
	if _, err := os.Stat(filepath.Join(data, PushedConfigFile)); !os.IsNotExist(err) {
		t.Errorf("the failing pushed config is still in place (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(data, FailedConfigFile)); err != nil {
		t.Errorf("the failing pushed config was not kept aside: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, failedConfigReason)); !os.IsNotExist(err) {
		t.Errorf("the failure was not reported at start (%v)", err)
	}
	resp, err := insecureClient().Get("https://" + r.ep.HTTPS + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r.stop(t)
}
