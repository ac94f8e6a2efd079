package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/audit"
	"github.com/outpost-gw/outpost/internal/broker"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/internal/store"
)

// TestOutpostdKill9NothingLost kills the real daemon with SIGKILL at 20
// random moments while it produces messages (audit entries for every start
// and every command the fleet sends, telemetry every second), restarting it
// each time, then lets it drain. Every audit entry the box kept — each one
// committed to the outbox in the same transaction — must reach the fleet:
// the received sequence numbers are exactly 1..N of the box's chain.
func TestOutpostdKill9NothingLost(t *testing.T) {
	bin := buildOutpostd(t)
	dir := t.TempDir()
	var f *fleet.Fleet
	var brokerURL, opURL *url.URL // the boxes' and the operator's
	if os.Getenv("KILL_TEST_EMBEDDED") != "" {
		var err error
		f, err = fleet.Init(filepath.Join(dir, "fleet"), fleet.InitOptions{Name: "kill", BrokerURL: "mqtts://127.0.0.1:8883", BrokerHosts: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		br, err := broker.StartFleet(f, "127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer br.Close()
		brokerURL, opURL = br.URL(), br.URL()
	} else {
		requireTools(t, "mosquitto")
		f = mosqFleet(t, "kill")
		m := mosqStart(t, f)
		brokerURL, opURL = m.URL, m.OpURL
	}
	ff, _ := config.LoadFleet(f.FleetFilePath())
	ff.BrokerURL = brokerURL.String()
	fb, _ := json.Marshal(ff)
	fleetPath := filepath.Join(dir, "fleet.json")
	os.WriteFile(fleetPath, fb, 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	op, err := operator.Connect(ctx, f, operator.Options{BrokerURL: opURL, ClientID: "operator-kill-test", Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	go op.ClaimAll(ctx)
	var mu sync.Mutex
	got := map[uint64]wire.ID{}
	dups := 0
	var device string
	op.Subscribe(func(m operator.Message) {
		if m.Stream != "audit" {
			return
		}
		var a wire.Audit
		if wire.DecodeBody(m.Env, &a, wire.DefaultLimits()) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		device = m.Device
		if id, ok := got[a.Seq]; ok {
			if id != m.Env.ID {
				t.Errorf("audit seq %d arrived twice with different ids", a.Seq)
			}
			dups++
		}
		got[a.Seq] = m.Env.ID
	})

	port := freePort(t)
	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`{"config_version":1,"lan":{"https_addr":"127.0.0.1:%d","http_addr":""},"watchdog":{"disabled":true},"recorder":{"live_rtsp_addr":"127.0.0.1:0"},"cloud":{"telemetry_interval":"1s"}}`, port)), 0o600)
	data := filepath.Join(dir, "data")
	logs, _ := os.Create(filepath.Join(dir, "outpostd.log"))
	defer logs.Close()
	startBox := func() *exec.Cmd {
		cmd := exec.Command(bin, "-config", cfgPath, "-data", data, "-fleet", fleetPath)
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	// The fleet keeps sending commands; each one is audited by the box.
	cmdCtx, stopCommands := context.WithCancel(ctx)
	defer stopCommands()
	go func() {
		for cmdCtx.Err() == nil {
			mu.Lock()
			dev := device
			mu.Unlock()
			if dev != "" {
				op.Command(cmdCtx, dev, "ping", nil, 50*time.Millisecond)
			}
			time.Sleep(30 * time.Millisecond)
		}
	}()

	const kills = 20
	var killTimes []time.Time
	for range kills {
		cmd := startBox()
		time.Sleep(time.Duration(300+rand.IntN(1200)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		killTimes = append(killTimes, time.Now())
		cmd.Wait()
		fmt.Fprintf(logs, "=== test: SIGKILL at %s\n", killTimes[len(killTimes)-1].Format(time.RFC3339Nano))
	}
	// Last run: some more commands while it is up, then none (past their
	// 50 ms deadline, queued ones are refused without an audit entry); let
	// it drain, then stop it cleanly.
	cmd := startBox()
	time.Sleep(2 * time.Second)
	stopCommands()
	time.Sleep(time.Second)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 2 * time.Second}
	drained := false
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && !drained; time.Sleep(200 * time.Millisecond) {
		resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/api/v1/status", port))
		if err != nil {
			continue
		}
		var s struct {
			Cloud struct {
				State  string `json:"state"`
				Outbox int64  `json:"outbox_depth"`
			} `json:"cloud"`
		}
		json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		drained = s.Cloud.State == "online" && s.Cloud.Outbox == 0
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if !drained {
		b, _ := os.ReadFile(logs.Name())
		t.Fatalf("the box did not drain its outbox; logs:\n%s", tail(string(b), 40))
	}

	st, err := store.Open(data, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	al, err := audit.Open(st, nil, nil, nil)
	if err != nil {
		t.Fatalf("the box's audit chain after %d SIGKILLs: %v", kills, err)
	}
	entries, err := al.Entries(1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the last messages in flight
	mu.Lock()
	defer mu.Unlock()
	var missing []uint64
	for _, e := range entries {
		if _, ok := got[e.Seq]; !ok {
			missing = append(missing, e.Seq)
			near := time.Duration(1 << 62)
			for _, k := range killTimes {
				if d := e.Time.Sub(k); d.Abs() < near.Abs() {
					near = d
				}
			}
			t.Logf("missing entry: seq %d at %s (%s, made %v after the nearest SIGKILL; negative: before it)", e.Seq, e.Time.Format("15:04:05.000"), e.Action, near)
		}
	}
	t.Logf("%d SIGKILLs: the box kept %d audit entries; the fleet received %d distinct (%d duplicates, same ids)", kills, len(entries), len(got), dups)
	if len(missing) > 0 {
		b, _ := os.ReadFile(logs.Name())
		var errs []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "refused") ||
				strings.Contains(l, "disconnected us") || strings.Contains(l, "client error") || strings.Contains(l, "SIGKILL at") {
				errs = append(errs, l)
			}
		}
		t.Errorf("audit entries the box committed but the fleet never received: %v\nerrors in the box's logs:\n%s", missing, tail(strings.Join(errs, "\n"), 30))
	}
	if len(entries) < kills {
		t.Errorf("only %d audit entries: the daemon did not get to produce", len(entries))
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
