package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/broker"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/recorder/democam"
)

// session is one resumable upload session (GCS style) whose first chunk
// PUT takes half the body, then hangs until the client goes.
type session struct {
	mu       sync.Mutex
	got      []byte
	complete bool
	cut      bool
}

func (s *session) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	span, total, _ := strings.Cut(strings.TrimPrefix(r.Header.Get("Content-Range"), "bytes "), "/")
	n, err := strconv.Atoi(total)
	if r.Method != http.MethodPut || r.URL.Query().Get("sig") != "k" || err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if span != "*" {
		from, _, _ := strings.Cut(span, "-")
		s.mu.Lock()
		cut, at := s.cut, len(s.got)
		s.cut = false
		s.mu.Unlock()
		if strconv.Itoa(at) != from {
			http.Error(w, "chunk not where the session is", http.StatusBadRequest)
			return
		}
		if cut {
			half := make([]byte, r.ContentLength/2)
			k, _ := io.ReadFull(r.Body, half)
			s.mu.Lock()
			s.got = append(s.got, half[:k]...)
			s.mu.Unlock()
			// Hang until the client dies: mid-body, or waiting for an answer.
			if _, err := io.Copy(io.Discard, r.Body); err == nil {
				<-r.Context().Done()
			}
			panic(http.ErrAbortHandler)
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.got = append(s.got, body...)
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) == n {
		s.complete = true
		w.WriteHeader(http.StatusOK)
		return
	}
	if len(s.got) > 0 {
		w.Header().Set("Range", fmt.Sprintf("bytes=0-%d", len(s.got)-1))
	}
	w.WriteHeader(http.StatusPermanentRedirect)
}

func (s *session) state() ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.got), s.complete
}

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
	up := &session{cut: true}
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
		"--start", from.UTC().Format(time.RFC3339), "--duration", "2s", "--url", srv.URL+"/b/clip.mp4?upload_id=1&sig=k", "--wait", "90s")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if got, _ := up.state(); len(got) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing uploaded; CLI:\n%s", out.String())
		}
	}
	box.Process.Signal(syscall.SIGKILL)
	box.Wait()
	half, _ := up.state()
	box = startBox()
	werr := cmd.Wait()
	got, complete := up.state()
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
