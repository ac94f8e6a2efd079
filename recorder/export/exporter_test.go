package export

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/internal/testutil/tools"
	"github.com/outpost-gw/outpost/recorder"
	"github.com/outpost-gw/outpost/recorder/export/exporttest"
	"github.com/outpost-gw/outpost/recorder/index"
	"github.com/outpost-gw/outpost/recorder/playback"
	"github.com/outpost-gw/outpost/recorder/retention"
	"github.com/outpost-gw/outpost/recorder/segment"
	"github.com/outpost-gw/outpost/recorder/synth"
)

var rt0 = time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)

// checkMP4 runs ffprobe and a full ffmpeg decode on file; both must pass
// without a word on stderr.
func checkMP4(t *testing.T, file string) {
	t.Helper()
	for _, args := range [][]string{
		{"ffprobe", "-v", "error", "-show_streams", "-show_format", file},
		{"ffmpeg", "-v", "error", "-xerror", "-i", file, "-f", "null", "-"},
	} {
		var errb bytes.Buffer
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stderr = &errb
		if err := cmd.Run(); err != nil || errb.Len() > 0 {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
	}
}

// fixture is a store, an index and real segments of camera "door": 64x48
// synthetic video (~115 KB key frames), 2 s GOPs, 4 s segments, from rt0 for secs seconds.
type fixture struct {
	root string
	st   *store.Store
	ix   *index.Index
	recs []index.Recording
}

func newFixture(t testing.TB, secs int) *fixture {
	return newFixtureSize(t, secs, 320, 240, 50)
}

func newFixtureSize(t testing.TB, secs, width, height, gop int) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "state"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{root: filepath.Join(dir, "rec"), st: st, ix: index.New(st)}
	w, err := segment.New(segment.Config{Dir: f.root, Camera: "door", SegmentDuration: 4 * time.Second, PartDuration: 500 * time.Millisecond,
		OnSegment: func(info segment.SegmentInfo) {
			rel, _ := filepath.Rel(f.root, info.Path)
			r := index.Recording{Camera: info.Camera, File: rel, Start: info.Start, Duration: info.Duration, Bytes: info.Bytes}
			if err := f.ix.Add(r); err != nil {
				t.Error(err)
			}
			f.recs = append(f.recs, r)
		}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := synth.New(synth.Options{Width: width, Height: height, FPS: 25, GOP: gop, Start: rt0})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start([]recorder.Track{v.Track()}); err != nil {
		t.Fatal(err)
	}
	for {
		s := v.Next()
		if s.DTS >= time.Duration(secs)*time.Second {
			break
		}
		if err := w.Write(s); err != nil {
			t.Fatal(err)
		}
	}
	w.End(errors.New("done"))
	return f
}

// clipPath is where request uploads (one session per test server).
const clipPath = "/upload/clip.mp4"

func uploadServer() *exporttest.Server { return &exporttest.Server{Sig: "secret"} }

// fakeClock returns at once and remembers the waits; its time is rt0 plus
// the waits so far.
type fakeClock struct {
	mu    sync.Mutex
	waits []time.Duration
	now   time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.now.IsZero() {
		return rt0
	}
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	if c.now.IsZero() {
		c.now = rt0
	}
	c.now = c.now.Add(d)
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- rt0
	return ch
}

// events collects progress.
type events struct {
	mu  sync.Mutex
	got []Event
}

func (e *events) add(ev Event) { e.mu.Lock(); e.got = append(e.got, ev); e.mu.Unlock() }
func (e *events) phases() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.got {
		p := ev.Phase
		if p == PhaseUploading {
			p += " " + strconv.Itoa(ev.Percent)
		}
		out = append(out, p)
	}
	return out
}

func (e *events) wait(t testing.TB, phase string) Event {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		e.mu.Lock()
		for _, ev := range e.got {
			if ev.Phase == phase {
				e.mu.Unlock()
				return ev
			}
		}
		e.mu.Unlock()
	}
	t.Fatalf("no %s event; got %v", phase, e.phases())
	return Event{}
}

func (f *fixture) exporter(t testing.TB, srv *httptest.Server, clock Clock, ev *events, logw io.Writer) *Exporter {
	return &Exporter{
		Store: f.st, Index: f.ix, Root: f.root, Holds: &Holds{},
		Up:       &Uploader{Client: srv.Client(), ChunkSize: 64 << 10, Clock: clock, Log: slog.New(slog.NewTextHandler(logw, nil))},
		Progress: ev.add,
		Log:      slog.New(slog.NewTextHandler(logw, nil)),
	}
}

func request(srv *httptest.Server, id string, from, dur time.Duration) Request {
	return Request{ID: id, Camera: "door", Start: rt0.Add(from), Duration: dur, URL: srv.URL + clipPath + "?upload_id=1&sig=secret"}
}

// TestExportResumes: an export whose connection is cut twice mid-chunk
// resumes from what the server holds each time; the file at the server is
// byte for byte the clip playback makes, and ffmpeg decodes it.
func TestExportResumes(t *testing.T) {
	f := newFixture(t, 12)
	rs := uploadServer()
	rs.Inject("", exporttest.Drop, exporttest.Drop)
	srv := httptest.NewTLSServer(rs)
	defer srv.Close()
	clock := &fakeClock{}
	ev := &events{}
	var logs bytes.Buffer
	var logMu sync.Mutex
	e := f.exporter(t, srv, clock, ev, writerFunc(func(p []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return logs.Write(p) }))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	waitRunning(e)

	req := request(srv, "exp-1", 3*time.Second, 6*time.Second)
	if _, err := e.Submit("export", req, rt0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Submit("export", req, rt0); !errors.Is(err, ErrDuplicate) {
		t.Errorf("same id again: %v, want ErrDuplicate", err)
	}
	done := ev.wait(t, PhaseDone)
	got, complete := rs.File(clipPath)
	var want bytes.Buffer
	if err := playback.Write(ctx, &want, f.root, f.recs, req.Start, req.Duration); err != nil {
		t.Fatal(err)
	}
	if !complete || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("server holds %d bytes (complete %v), the clip is %d", len(got), complete, want.Len())
	}
	if done.Bytes != int64(want.Len()) {
		t.Errorf("done event: %d bytes, want %d", done.Bytes, want.Len())
	}
	if len(clock.waits) != 2 {
		t.Errorf("backoff waits %v, want two (one per cut)", clock.waits)
	}
	if e.Holds.Held("door", req.Start, req.Start.Add(time.Second)) {
		t.Error("still held after the export ended")
	}
	ph := ev.phases()
	if ph[0] != PhaseQueued || !strings.HasPrefix(ph[1], "uploading") || ph[len(ph)-1] != PhaseDone {
		t.Errorf("phases %v", ph)
	}
	logMu.Lock()
	if strings.Contains(logs.String(), "secret") || strings.Contains(logs.String(), "upload_id") {
		t.Errorf("the URL's query reached the log:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "/upload/clip.mp4") {
		t.Errorf("the log does not name the upload path:\n%s", logs.String())
	}
	logMu.Unlock()
	t.Logf("%d bytes, %d PUTs, phases %v", len(got), rs.Puts(), ph)

	tools.Need(t, "ffmpeg", "ffprobe")
	file := filepath.Join(t.TempDir(), "got.mp4")
	os.WriteFile(file, got, 0o600)
	checkMP4(t, file)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func waitRunning(e *Exporter) {
	for {
		e.mu.Lock()
		ok := e.ctx != nil
		e.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPlainHTTPRefused: http:// (and other non-https URLs) are refused
// before anything is queued or sent.
func TestPlainHTTPRefused(t *testing.T) {
	f := newFixture(t, 4)
	rs := uploadServer()
	srv := httptest.NewServer(rs)
	defer srv.Close()
	e := &Exporter{Store: f.st, Index: f.ix, Root: f.root, Holds: &Holds{}}
	req := Request{ID: "e", Camera: "door", Start: rt0, Duration: time.Second, URL: srv.URL + clipPath + "?sig=secret"}
	if _, err := e.Submit("export", req, rt0); !errors.Is(err, ErrURL) {
		t.Errorf("Submit http: %v", err)
	}
	up := &Uploader{Client: srv.Client()}
	err := up.Upload(context.Background(), Clip{URL: req.URL, Size: 1, Source: func(context.Context, io.Writer) error { return nil }})
	if !errors.Is(err, ErrURL) {
		t.Errorf("Upload http: %v", err)
	}
	if rs.Puts() != 0 {
		t.Errorf("%d requests reached the plain server", rs.Puts())
	}
	if jobs, _ := e.Load(); len(jobs) != 0 {
		t.Errorf("jobs stored: %v", jobs)
	}
}

// TestHeldWhilePending: while an export waits, retention passes its
// segments over (others go); once it is done they can go too.
func TestHeldWhilePending(t *testing.T) {
	f := newFixture(t, 16)
	rs := &exporttest.Server{Sig: "secret", Block: make(chan struct{})}
	srv := httptest.NewTLSServer(rs)
	defer srv.Close()
	ev := &events{}
	e := f.exporter(t, srv, &fakeClock{}, ev, io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	waitRunning(e)
	if _, err := e.Submit("export", request(srv, "exp-h", 5*time.Second, 2*time.Second), rt0); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, PhaseUploading)
	cl := &retention.Cleaner{Root: f.root, Index: f.ix, MaxAge: time.Second, Now: func() time.Time { return rt0.Add(time.Hour) }, Held: e.Holds.Held}
	res, err := cl.Pass()
	if err != nil {
		t.Fatal(err)
	}
	left, _ := f.ix.List("door", rt0, rt0.Add(time.Hour))
	if res.Held != 1 || len(left) != 1 || !left[0].Start.Equal(f.recs[1].Start) {
		t.Fatalf("pass %+v left %v, want only the segment 4..8 s held", res, left)
	}
	if _, err := os.Stat(filepath.Join(f.root, left[0].File)); err != nil {
		t.Fatalf("held file: %v", err)
	}
	close(rs.Block)
	ev.wait(t, PhaseDone)
	if res, _ := cl.Pass(); res.Deleted != 1 || res.Held != 0 {
		t.Errorf("after the export: %+v", res)
	}
}

// TestResumeAfterRestart: an exporter stopped mid-upload leaves the job in
// the store; the next one holds its segments at Load and finishes it from
// where the server is.
func TestResumeAfterRestart(t *testing.T) {
	f := newFixture(t, 8)
	rs := &exporttest.Server{Sig: "secret", Block: make(chan struct{})} // each chunk waits for a token
	srv := httptest.NewTLSServer(rs)
	defer srv.Close()
	ev := &events{}
	e := f.exporter(t, srv, &fakeClock{}, ev, io.Discard)
	e.Up.ChunkSize = 16 << 10
	ctx, cancel := context.WithCancel(context.Background())
	go e.Run(ctx)
	waitRunning(e)
	req := request(srv, "exp-r", 0, 8*time.Second)
	if _, err := e.Submit("export", req, rt0); err != nil {
		t.Fatal(err)
	}
	rs.Block <- struct{}{} // two chunks, then the daemon stops
	rs.Block <- struct{}{}
	for {
		if got, _ := rs.File(clipPath); len(got) == 32<<10 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	e.Wait()
	if got, done := rs.File(clipPath); done || len(got) != 32<<10 {
		t.Fatalf("server has %d bytes, done %v", len(got), done)
	}

	ev2 := &events{}
	e2 := f.exporter(t, srv, &fakeClock{}, ev2, io.Discard)
	e2.Up.ChunkSize = 16 << 10
	stored, err := e2.Load()
	if err != nil || len(stored) != 1 || stored[0].Size == 0 {
		t.Fatalf("stored jobs %+v, %v", stored, err)
	}
	if !e2.Holds.Held("door", rt0, rt0.Add(time.Second)) {
		t.Error("not held after Load")
	}
	before := len(rs.Applied(clipPath))
	close(rs.Block)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go e2.Run(ctx2)
	ev2.wait(t, PhaseDone)
	got, _ := rs.File(clipPath)
	var want bytes.Buffer
	playback.Write(ctx2, &want, f.root, f.recs, req.Start, req.Duration)
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("resumed upload: %d bytes, want the clip's %d", len(got), want.Len())
	}
	rest := (len(got) - 32<<10 + 16<<10 - 1) / (16 << 10)
	after := rs.Applied(clipPath)[before:]
	if len(after) != rest || after[0] != 32<<10 {
		t.Errorf("resumed with chunks at %v, want %d from 32768 (the rest)", after, rest)
	}
	if jobs, _ := e2.Load(); len(jobs) != 0 {
		t.Errorf("jobs left: %v", jobs)
	}
}

// TestUploadFailures: a session the server forgot fails at once (no
// retries); a clip that changes between attempts never completes.
func TestUploadFailures(t *testing.T) {
	rs := uploadServer()
	rs.SetGone()
	srv := httptest.NewTLSServer(rs)
	defer srv.Close()
	clock := &fakeClock{}
	up := &Uploader{Client: srv.Client(), ChunkSize: 4, Clock: clock}
	url := srv.URL + clipPath + "?sig=secret"
	data := []byte("0123456789abcdef")
	src := func(_ context.Context, w io.Writer) error { _, err := w.Write(data); return err }
	n, sum, _ := Measure(context.Background(), src)
	if err := up.Upload(context.Background(), Clip{URL: url, Size: n, SHA256: sum, Source: src}); !errors.Is(err, ErrSession) || len(clock.waits) != 0 {
		t.Errorf("gone session: %v after %d waits", err, len(clock.waits))
	}

	rs2 := uploadServer()
	rs2.Inject("", exporttest.Drop)
	srv2 := httptest.NewTLSServer(rs2)
	defer srv2.Close()
	up.Client = srv2.Client()
	calls := 0
	changing := func(_ context.Context, w io.Writer) error {
		calls++
		b := bytes.Clone(data)
		if calls > 1 {
			b[len(b)-1] = 'X' // the last byte differs on the retry
		}
		_, err := w.Write(b)
		return err
	}
	err := up.Upload(context.Background(), Clip{URL: srv2.URL + "/u?sig=secret", Size: n, SHA256: sum, Source: changing})
	if got, done := rs2.File(clipPath); !errors.Is(err, ErrChanged) || done || len(got) >= len(data) {
		t.Errorf("changed clip: %v; server has %q, complete %v", err, got, done)
	}
}

// TestBackoff: a server that keeps failing is retried with waits whose
// bound doubles up to MaxBackoff, jittered, until GiveUp has passed since
// the upload began.
func TestBackoff(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	clock := &fakeClock{}
	up := &Uploader{Client: srv.Client(), Clock: clock, Backoff: time.Second, MaxBackoff: time.Minute, GiveUp: time.Hour}
	src := func(_ context.Context, w io.Writer) error { _, err := w.Write([]byte("x")); return err }
	n, sum, _ := Measure(context.Background(), src)
	err := up.Upload(context.Background(), Clip{URL: srv.URL + clipPath, Size: n, SHA256: sum, Source: src, Began: rt0})
	if err == nil || !strings.Contains(err.Error(), "gave up") || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Upload: %v", err)
	}
	var total time.Duration
	distinct := map[time.Duration]bool{}
	for i, w := range clock.waits {
		bound := time.Minute
		if i < 6 {
			bound = time.Second << i
		}
		if w <= 0 || w > bound {
			t.Errorf("wait %d: %v, bound %v", i, w, bound)
		}
		total += w
		distinct[w] = true
	}
	if total < time.Hour || total > time.Hour+time.Minute || len(distinct) < len(clock.waits)/2 {
		t.Errorf("%d waits, %v in all, %d distinct", len(clock.waits), total, len(distinct))
	}
}

// TestStalledServer: a server that stops reading mid-chunk and never
// answers is given up on after the stall timeout, and the upload resumes.
func TestStalledServer(t *testing.T) {
	rs := uploadServer()
	rs.Inject("", exporttest.Hang)
	srv := httptest.NewTLSServer(rs)
	defer srv.Close()
	clock := &fakeClock{}
	up := &Uploader{Client: srv.Client(), Clock: clock, StallTimeout: 300 * time.Millisecond}
	// 16 MiB, two chunks: the server takes 4 MiB, then stalls (the
	// transport blocks writing, or waits for an answer).
	data := bytes.Repeat([]byte("outpost "), 2<<20)
	src := func(_ context.Context, w io.Writer) error { _, err := w.Write(data); return err }
	n, sum, _ := Measure(context.Background(), src)
	began := time.Now()
	if err := up.Upload(context.Background(), Clip{URL: srv.URL + clipPath + "?sig=secret", Size: n, SHA256: sum, Source: src}); err != nil {
		t.Fatal(err)
	}
	if got, done := rs.File(clipPath); !done || !bytes.Equal(got, data) {
		t.Fatalf("server has %d bytes, complete %v", len(got), done)
	}
	if len(clock.waits) != 1 {
		t.Errorf("%d retries, want one", len(clock.waits))
	}
	t.Logf("stalled and resumed in %v", time.Since(began))
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true}, {"bytes=0-0", 1, true}, {"bytes=0-262143", 262144, true},
		{"bytes=1-5", 0, false}, {"bytes=0--1", 0, false}, {"bytes=0-x", 0, false}, {"0-5", 0, false},
	} {
		got, err := parseRange(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%q: %d %v", tc.in, got, err)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"", "bytes=0-0", "bytes=0-99", "bytes=0-", "bytes=0-9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseRange(s)
		if err == nil && n < 0 {
			t.Fatalf("%q: %d", s, n)
		}
	})
}

func TestRedact(t *testing.T) {
	if got := Redact("https://u:p@up.example:8443/b/o.mp4?X-Goog-Signature=abc#f"); got != "https://up.example:8443/b/o.mp4" {
		t.Errorf("Redact: %q", got)
	}
}

// TestSnapshotBesideExport: a snapshot does not wait behind an export that
// is stuck uploading.
func TestSnapshotBesideExport(t *testing.T) {
	f := newFixture(t, 8)
	slow := &exporttest.Server{Sig: "secret", Block: make(chan struct{})}
	srvSlow := httptest.NewTLSServer(slow)
	defer srvSlow.Close()
	defer close(slow.Block)
	fast := uploadServer()
	srvFast := httptest.NewTLSServer(fast)
	defer srvFast.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srvSlow.Certificate())
	pool.AddCert(srvFast.Certificate())
	ev := &events{}
	e := f.exporter(t, srvFast, &fakeClock{}, ev, io.Discard)
	e.Up.Client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); e.Wait() }()
	go e.Run(ctx)
	waitRunning(e)
	if _, err := e.Submit("export", request(srvSlow, "exp-slow", 0, 8*time.Second), rt0); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, PhaseUploading)
	if _, err := e.Submit(KindSnapshot, request(srvFast, "snap", 6*time.Second, time.Millisecond), rt0); err != nil {
		t.Fatal(err)
	}
	if done := ev.wait(t, PhaseDone); done.Job.ID != "snap" {
		t.Errorf("done first: %s", done.Job.ID)
	}
	if _, complete := fast.File(clipPath); !complete {
		t.Error("snapshot not at the server")
	}
}

// TestCancel: an upload under way and a job waiting for its turn both end
// as cancelled, out of the store and off hold; an unknown id is an error.
func TestCancel(t *testing.T) {
	f := newFixture(t, 8)
	rs := &exporttest.Server{Sig: "secret", Block: make(chan struct{})}
	srv := httptest.NewTLSServer(rs)
	defer srv.Close()
	defer close(rs.Block)
	ev := &events{}
	e := f.exporter(t, srv, &fakeClock{}, ev, io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); e.Wait() }()
	go e.Run(ctx)
	waitRunning(e)
	for _, id := range []string{"first", "second"} {
		if _, err := e.Submit("export", request(srv, id, 0, 4*time.Second), rt0); err != nil {
			t.Fatal(err)
		}
	}
	ev.wait(t, PhaseUploading)
	for _, id := range []string{"second", "first"} {
		if err := e.Cancel(id); err != nil {
			t.Fatalf("cancel %s: %v", id, err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		n := 0
		ev.mu.Lock()
		for _, x := range ev.got {
			if x.Phase == PhaseCancelled {
				n++
			}
		}
		ev.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("phases %v", ev.phases())
		}
	}
	if jobs, _ := e.Load(); len(jobs) != 0 || e.Holds.Held("door", rt0, rt0.Add(time.Second)) {
		t.Errorf("after cancel: jobs %v, held %v", jobs, e.Holds.Held("door", rt0, rt0.Add(time.Second)))
	}
	if slices.Contains(ev.phases(), PhaseDone) || slices.Contains(ev.phases(), PhaseFailed) {
		t.Errorf("phases %v", ev.phases())
	}
	if err := e.Cancel("nosuch"); !errors.Is(err, ErrUnknownJob) {
		t.Errorf("cancel unknown: %v", err)
	}
}
