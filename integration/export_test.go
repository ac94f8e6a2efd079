package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/broker"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/recorder/democam"
	"github.com/outpost-gw/outpost/recorder/export/exporttest"
)

// uploadPath is where the clip goes on the upload server.
const uploadPath = "/b/clip.mp4"

// TestExportKill9Resumes: the real outpost CLI asks the real daemon for a
// clip export; half of the first chunk reaches the upload server, then the
// daemon is killed with SIGKILL. Started again, it resumes the job from the
// store and the server's count; the CLI, still following, reports done;
// the file at the server decodes.
func TestExportKill9Resumes(t *testing.T) {
	requireTools(t, "ffmpeg")
	bin, cli := buildOutpostd(t), outpost(t)
	dir := t.TempDir()
	f, err := fleet.Init(filepath.Join(dir, "fleet"), fleet.InitOptions{Name: "exp", BrokerURL: "mqtts://127.0.0.1:8883", BrokerHosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	br, err := broker.StartFleet(f, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	ff, _ := config.LoadFleet(f.FleetFilePath())
	ff.BrokerURL = br.URL().String()
	fb, _ := json.Marshal(ff)
	fleetPath := filepath.Join(dir, "fleet.json")
	os.WriteFile(fleetPath, fb, 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	op, err := operator.Connect(ctx, f, operator.Options{BrokerURL: br.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	go op.ClaimAll(ctx)
	devc := make(chan string, 1)
	op.Subscribe(func(m operator.Message) {
		select {
		case devc <- m.Device:
		default:
		}
	})

	cam, err := democam.Start(democam.Options{FPS: 10, GOP: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	up := &exporttest.Server{Sig: "k"}
	up.Inject("", exporttest.Hang) // half of the first chunk, then it waits for the client to go
	srv := httptest.NewTLSServer(up)
	defer srv.Close()
	caFile := filepath.Join(dir, "upload-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)

	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`{"config_version":1,"lan":{"https_addr":"127.0.0.1:%d","http_addr":""},"watchdog":{"disabled":true},
		"recorder":{"live_rtsp_addr":"","segment_duration":"1s","part_duration":"250ms","cameras":[{"id":"door","url":%q}]}}`, freePort(t), cam.URL)), 0o600)
	data := filepath.Join(dir, "data")
	logs, _ := os.Create(filepath.Join(dir, "outpostd.log"))
	defer logs.Close()
	startBox := func() *exec.Cmd {
		cmd := exec.Command(bin, "-config", cfgPath, "-data", data, "-fleet", fleetPath)
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+caFile) // trusts the upload server
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	box := startBox()
	defer func() { box.Process.Kill(); box.Wait() }()
	var dev string
	select {
	case dev = <-devc:
	case <-time.After(30 * time.Second):
		t.Fatal("the box did not come online")
	}

	// Wait for closed segments covering two seconds (file names are their
	// start times).
	var from time.Time
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		files, _ := filepath.Glob(filepath.Join(data, "recordings", "door", "*", "*.mp4"))
		sort.Strings(files)
		if len(files) > 0 {
			first, err := time.Parse("20060102T150405.000Z", strings.TrimSuffix(filepath.Base(files[0]), ".mp4"))
			if err != nil {
				t.Fatal(err)
			}
			from = first.Truncate(time.Second).Add(time.Second)
			if len(files) >= 6 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recording: %v", files)
		}
	}

	var out bytes.Buffer
	cmd := exec.Command(cli, "fleet", "export", dev, "--dir", f.Dir, "--broker", br.URL().String(), "--camera", "door",
		"--start", from.UTC().Format(time.RFC3339), "--duration", "2s", "--url", srv.URL+uploadPath+"?upload_id=1&sig=k", "--wait", "90s")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if got, _ := up.File(uploadPath); len(got) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing uploaded; CLI:\n%s", out.String())
		}
	}
	box.Process.Signal(syscall.SIGKILL)
	box.Wait()
	half, _ := up.File(uploadPath)
	box = startBox()
	werr := cmd.Wait()
	got, complete := up.File(uploadPath)
	if werr != nil || !complete || !strings.Contains(out.String(), ": done") {
		b, _ := os.ReadFile(logs.Name())
		t.Fatalf("CLI: %v\n%s\nserver: %d bytes, complete %v\nbox logs:\n%s", werr, out.String(), len(got), complete, tail(string(b), 30))
	}
	if !bytes.HasPrefix(got, half) || len(got) <= len(half) {
		t.Errorf("resumed upload: %d bytes before the kill, %d after", len(half), len(got))
	}
	file := filepath.Join(dir, "clip.mp4")
	os.WriteFile(file, got, 0o600)
	if o, err := exec.Command("ffmpeg", "-v", "error", "-xerror", "-i", file, "-f", "null", "-").CombinedOutput(); err != nil || len(o) > 0 {
		t.Errorf("the uploaded clip does not decode: %v\n%s", err, o)
	}
	t.Logf("%d of %d bytes before SIGKILL; CLI:\n%s", len(half), len(got), out.String())
}
