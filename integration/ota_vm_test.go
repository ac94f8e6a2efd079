package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/image"
	"github.com/outpost-gw/outpost/internal/broker"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/operator"
)

// guestArtifacts is where the VM finds the release server: the broker's
// address (its fleet-CA certificate names it), port 443.
const guestArtifacts = "10.0.2.100:443"

// artifactServer serves release directories over HTTPS under the fleet
// CA's broker certificate, counting requests per release and optionally
// drip-feeding one release so a test can cut the power mid-write.
type artifactServer struct {
	srv  *http.Server
	ln   net.Listener
	mu   sync.Mutex
	dirs map[string]string // "v2" → release dir
	hits map[string]int
	slow map[string]int // release → bytes per second
}

func startArtifactServer(t *testing.T, f *fleet.Fleet) *artifactServer {
	t.Helper()
	certFile, keyFile := f.BrokerCertFiles()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	a := &artifactServer{dirs: map[string]string{}, hits: map[string]int{}, slow: map[string]int{}}
	a.ln, err = tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	a.srv = &http.Server{Handler: http.HandlerFunc(a.serve)}
	go a.srv.Serve(a.ln)
	t.Cleanup(func() { a.srv.Close() })
	return a
}

func (a *artifactServer) serve(w http.ResponseWriter, r *http.Request) {
	rel, file, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	a.mu.Lock()
	a.hits[rel]++
	dir, rate := a.dirs[rel], a.slow[rel]
	a.mu.Unlock()
	if dir == "" || strings.Contains(file, "/") {
		http.NotFound(w, r)
		return
	}
	fh, err := os.Open(filepath.Join(dir, file))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer fh.Close()
	var rs io.ReadSeeker = fh
	if rate > 0 {
		rs = &slowReader{rs: fh, rate: rate}
	}
	http.ServeContent(w, r, file, time.Time{}, rs)
}

func (a *artifactServer) count(rel string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hits[rel]
}

// slowReader reads at about rate bytes per second.
type slowReader struct {
	rs   io.ReadSeeker
	rate int
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(p) > 32<<10 {
		p = p[:32<<10]
	}
	time.Sleep(time.Duration(len(p)) * time.Second / time.Duration(s.rate))
	return s.rs.Read(p)
}
func (s *slowReader) Seek(off int64, whence int) (int64, error) { return s.rs.Seek(off, whence) }

// otaLog collects the boxes' "ota" events.
type otaLog struct {
	mu  sync.Mutex
	evs []wire.Event
}

func (l *otaLog) add(m operator.Message) {
	var ev wire.Event
	if m.Stream != "event" || wire.DecodeBody(m.Env, &ev, wire.DefaultLimits()) != nil || ev.Kind != "ota" {
		return
	}
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

// wait returns the first event after index from that matches, waiting up
// to timeout.
func (l *otaLog) wait(t *testing.T, v *vm, from int, timeout time.Duration, match func(wire.Event) bool) (wire.Event, int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for i := from; i < len(l.evs); i++ {
			if match(l.evs[i]) {
				ev := l.evs[i]
				l.mu.Unlock()
				return ev, i + 1
			}
		}
		l.mu.Unlock()
		select {
		case err := <-v.done:
			v.done <- err
			t.Fatalf("qemu exited: %v\nserial console:\n%s", err, v.serialTail())
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("no matching ota event within %v; events: %s\nserial console:\n%s", timeout, l.String(), v.serialTail())
	return wire.Event{}, 0
}

func (l *otaLog) len() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.evs) }

func (l *otaLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, ev := range l.evs {
		fmt.Fprintf(&b, "[v%s %s %s %s] ", ev.Attrs["version"], ev.Attrs["phase"], ev.Attrs["percent"], ev.Attrs["reason"])
	}
	return b.String()
}

// waitVersion polls /healthz until the box answers with version.
func (v *vm) waitVersion(t *testing.T, version string, timeout time.Duration) health {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var h health
	for time.Now().Before(deadline) {
		v.getJSON("/healthz", time.Until(deadline), &h)
		if h.Version == version {
			return h
		}
		time.Sleep(2 * time.Second)
	}
	t.Fatalf("the box runs %q, want %q\nserial console:\n%s", h.Version, version, v.serialTail())
	return h
}

// slotHash hashes the first n bytes of root partition p in the disk image.
func slotHash(t *testing.T, img string, p image.Partition, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, io.NewSectionReader(f, p.Offset(), n))
	return [32]byte(h.Sum(nil))
}

// TestOTAInQEMU is issue #5 end to end on the real image under qemu (TCG,
// restricted user network; broker and release server on the host's
// loopback, reached through guestfwd): boot v1; `outpost release push` a
// signed v2 → the box trial-boots it, passes its health gate and reports
// v2 committed; push v3 built with a failing health gate → the box reports
// the rollback and is back on v2 by itself; push a v4 whose manifest was
// altered after signing → refused before a byte is fetched or written;
// cut the power at several points while v5 is being written → v2 boots
// every time; then v5 resumes and commits (a third trial boot); push v6,
// whose daemon crashes at every trial start → the trial guard reboots and
// the box is back on v5, reporting it. About 6 minutes here; -short skips it.
func TestOTAInQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("the OTA VM test takes about 6 minutes")
	}
	requireTools(t, "qemu-system-x86_64", "mkfs.ext4")
	testStart := time.Now()
	tmp := t.TempDir()
	f, err := fleet.Init(filepath.Join(tmp, "fleet"), fleet.InitOptions{
		Name: "ota-fleet", BrokerURL: "mqtts://" + guestBroker, BrokerHosts: []string{"10.0.2.100", "127.0.0.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(tmp, "keys")
	runOutpost(t, time.Minute, "release", "keygen", "--dir", keys)
	pinOTARoot(t, f.FleetFilePath(), filepath.Join(keys, "ota_root.json"))

	art := startArtifactServer(t, f)
	phase := time.Now()
	rels := map[string]string{}
	for _, v := range []string{"v1", "v2", "v3", "v5", "v6"} {
		extra := []string{"--fleet", f.FleetFilePath()}
		switch v {
		case "v3":
			extra = append(extra, "--ldflags", "-X github.com/outpost-gw/outpost/internal/daemon.failHealthGate=vm-test-v3")
		case "v6":
			extra = append(extra, "--ldflags", "-X main.crashOnTrialBoot=vm-test-v6")
		}
		dir, _ := buildRelease(t, "amd64", v, extra...)
		rels[v] = dir
		art.dirs[v] = dir
		if v != "v1" {
			runOutpost(t, time.Minute, "release", "sign", "--dir", keys, "--release", dir, "--url-base", "https://"+guestArtifacts+"/"+v)
		}
	}
	// v4: v2's root, signed as v4, then altered (its URL) after signing.
	v4 := filepath.Join(tmp, "v4")
	os.MkdirAll(v4, 0o755)
	os.Link(filepath.Join(rels["v2"], "root.img"), filepath.Join(v4, "root.img"))
	art.dirs["v4"] = v4
	runOutpost(t, time.Minute, "release", "sign", "--dir", keys, "--version", "4", "--target", "amd64",
		"--artifact", "root="+filepath.Join(v4, "root.img")+"=https://"+guestArtifacts+"/v4/root.img", "--out", filepath.Join(v4, "manifest.json"))
	m4, _ := os.ReadFile(filepath.Join(v4, "manifest.json"))
	if !bytes.Contains(m4, []byte("/v4/root.img")) {
		t.Fatal("v4 manifest lacks its URL")
	}
	os.WriteFile(filepath.Join(v4, "manifest.json"), bytes.Replace(m4, []byte("/v4/root.img"), []byte("/v4/r00t.img"), 1), 0o644)
	t.Logf("TIMING builds (5 releases) and signing: %.0fs", time.Since(phase).Seconds())

	br, err := broker.StartFleet(f, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	op, err := operator.Connect(t.Context(), f, operator.Options{BrokerURL: br.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	go op.ClaimAll(t.Context())
	events := &otaLog{}
	op.Subscribe(events.add)
	pipe := stdiopipe(t)
	fwd := []string{
		"guestfwd=tcp:" + guestBroker + "-cmd:" + pipe + " " + br.URL().Host,
		"guestfwd=tcp:" + guestArtifacts + "-cmd:" + pipe + " " + art.ln.Addr().String(),
	}
	img := filepath.Join(rels["v1"], "disk.img")
	if err := os.Truncate(img, 3<<30); err != nil {
		t.Fatal(err)
	}
	l, err := image.ReadLayout(img)
	if err != nil {
		t.Fatal(err)
	}
	rootA, _ := l.Partition(2)

	phase = time.Now()
	v := startVM(t, img, true, fwd...)
	v.waitVersion(t, "v1", 150*time.Second)
	dev := v.waitOnline(t, 120*time.Second)
	t.Logf("TIMING boot v1 to online: %.0fs", time.Since(phase).Seconds())

	push := func(rel string, wantOK bool) string {
		t.Helper()
		args := []string{"release", "push", "--dir", f.Dir, "--broker", br.URL().String(), "--to", dev,
			"--keys", filepath.Join(keys, "keys.json"), "--release", rel, "--timeout", "6m"}
		ctx, cancel := context.WithTimeout(t.Context(), 7*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, outpost(t), args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if (err == nil) != wantOK {
			t.Fatalf("outpost release push %s: %v (want ok %v)\n%s\nevents: %s\nserial console:\n%s", rel, err, wantOK, out.String(), events, v.serialTail())
		}
		return out.String()
	}

	// v2: trial boot, health gate, committed.
	phase = time.Now()
	out := push(rels["v2"], true)
	t.Logf("push v2:\n%s", out)
	v.waitVersion(t, "v2", 60*time.Second)
	t.Logf("TIMING v2 offer → committed: %.0fs", time.Since(phase).Seconds())
	// The box re-hashed the partition gokrazy wrote (ota/install reads
	// the inactive root back) before it testbooted: verifying v2 between
	// the last download percent and installed.
	_, i := events.wait(t, v, 0, time.Second, func(e wire.Event) bool {
		return e.Attrs["phase"] == "downloading" && e.Attrs["version"] == "2" && e.Attrs["percent"] == "100"
	})
	_, j := events.wait(t, v, i, time.Second, func(e wire.Event) bool { return e.Attrs["phase"] == "verifying" && e.Attrs["version"] == "2" })
	events.wait(t, v, j, time.Second, func(e wire.Event) bool { return e.Attrs["phase"] == "installed" && e.Attrs["version"] == "2" })

	// v3 fails its health gate: rolled back, the box returns to v2 by itself.
	phase = time.Now()
	out = push(rels["v3"], false)
	t.Logf("push v3:\n%s", out)
	if !strings.Contains(out, "rolled_back") || !strings.Contains(out, "health gate") || !strings.Contains(out, "HALTED") {
		t.Errorf("push of v3: want a rollback naming the health gate and a halt:\n%s", out)
	}
	v.waitVersion(t, "v2", 150*time.Second)
	v.waitOnline(t, 120*time.Second)
	t.Logf("TIMING v3 offer → rolled back, v2 running again: %.0fs", time.Since(phase).Seconds())

	// v4, altered after signing: refused before anything is fetched or
	// written. v2 runs from root B; root A holds v3.
	phase = time.Now()
	before := slotHash(t, img, rootA, 64<<20)
	out = push(v4, false)
	t.Logf("push v4:\n%s", out)
	if !strings.Contains(out, "refused") || !strings.Contains(out, "signature") {
		t.Errorf("push of the altered v4: want a refusal naming the signatures:\n%s", out)
	}
	if n := art.count("v4"); n != 0 {
		t.Errorf("the box fetched from the altered v4's server %d times", n)
	}
	if slotHash(t, img, rootA, 64<<20) != before {
		t.Error("the inactive slot changed after the refused v4")
	}
	t.Logf("TIMING v4 refusal: %.1fs", time.Since(phase).Seconds())

	// v5: cut the power while it is written; v2 boots every time. The
	// server drips v5, so each cut lands mid-write.
	r5, _ := image.LoadRelease(rels["v5"])
	art.mu.Lock()
	art.slow["v5"] = int(r5.Artifacts[0].Length / 30)
	art.mu.Unlock()
	m5, _ := os.ReadFile(filepath.Join(rels["v5"], "manifest.json"))
	k, _ := os.ReadFile(filepath.Join(keys, "keys.json"))
	if r, err := op.Command(t.Context(), dev, "update", map[string][]byte{"keys": k, "manifest": m5}, time.Minute); err != nil || !r.OK {
		t.Fatalf("offering v5: %+v %v", r, err)
	}
	from := events.len()
	for i, pct := range []int{20, 60} {
		phase = time.Now()
		_, from = events.wait(t, v, from, 3*time.Minute, func(ev wire.Event) bool {
			p, _ := strconv.Atoi(ev.Attrs["percent"])
			return ev.Attrs["version"] == "5" && ev.Attrs["phase"] == "downloading" && p >= pct
		})
		v.kill()
		t.Logf("power cut %d at v5 %d%% written", i+1, pct)
		v = startVM(t, img, true, fwd...)
		h := v.waitVersion(t, "v2", 150*time.Second)
		t.Logf("TIMING cut %d → v2 up again: %.0fs (%+v)", i+1, time.Since(phase).Seconds(), h)
	}
	// After the last cut the box resumes v5 from the start and commits
	// it: its third trial boot, which needs the command line tidied of
	// the first two (ota/bootcmd).
	phase = time.Now()
	art.mu.Lock()
	art.slow["v5"] = 0
	art.mu.Unlock()
	events.wait(t, v, from, 5*time.Minute, func(ev wire.Event) bool {
		return ev.Attrs["version"] == "5" && (ev.Attrs["phase"] == "committed" || ev.Attrs["phase"] == "rolled_back")
	})
	v.waitVersion(t, "v5", 60*time.Second)
	t.Logf("TIMING v5 resumed after the last cut → committed: %.0fs", time.Since(phase).Seconds())

	// Pushing v5 again (a re-run rollout) is answered at once: committed.
	phase = time.Now()
	out = push(rels["v5"], true)
	if !strings.Contains(out, "committed") {
		t.Errorf("re-push of v5:\n%s", out)
	}
	t.Logf("TIMING re-push of the installed v5: %.1fs", time.Since(phase).Seconds())

	// v6's daemon crashes at every start of its trial boot, never reaching
	// the health gate: the trial guard reboots after 3 starts, the box
	// comes back on v5 and reports the fall-back.
	phase = time.Now()
	out = push(rels["v6"], false)
	t.Logf("push v6:\n%s", out)
	if !strings.Contains(out, "rolled_back") || !strings.Contains(out, "fell back") {
		t.Errorf("push of v6: want a rollback naming the fall-back:\n%s", out)
	}
	v.waitVersion(t, "v5", 150*time.Second)
	t.Logf("TIMING v6 offer → crash loop → back on v5: %.0fs", time.Since(phase).Seconds())
	v.kill()
	t.Logf("events: %s", events)
	t.Logf("TIMING whole OTA VM test: %.0fs", time.Since(testStart).Seconds())
}

// pinOTARoot adds the release root of trust to a fleet file.
func pinOTARoot(t *testing.T, fleetFile, otaRootFile string) {
	t.Helper()
	var ff map[string]any
	b, err := os.ReadFile(fleetFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ff); err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	b, _ = os.ReadFile(otaRootFile)
	if err := json.Unmarshal(b, &root); err != nil {
		t.Fatal(err)
	}
	ff["ota_root"] = root["ota_root"]
	b, _ = json.MarshalIndent(ff, "", "  ")
	if err := os.WriteFile(fleetFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
