package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	neturl "net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// demoFirstSegment bounds the wait for the demo's first closed segment:
// the demo's segment length, 10 s, cut at the next key frame (2 s), and
// slack for a busy machine.
const demoFirstSegment = 40 * time.Second

func TestDemo(t *testing.T) {
	began := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan int)
	go func() { done <- Main(ctx, []string{"demo", "--listen", "127.0.0.1:0"}, &out, &errOut) }()
	re := regexp.MustCompile(`Health check: +(https://\S+/healthz)`)
	var url string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
			break
		}
	}
	if url == "" {
		t.Fatalf("demo printed no health URL; stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if h["version"] == nil || h["boot_id"] == nil || h["uptime_s"] == nil {
		t.Errorf("healthz = %v", h)
	}
	// The demo's box enrols by itself and comes online with the fleet.
	statusURL := strings.TrimSuffix(url, "/healthz") + "/api/v1/status"
	var state string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := c.Get(statusURL)
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			Cloud struct {
				Enrolled bool
				State    string
			}
		}
		json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if state = s.Cloud.State; s.Cloud.Enrolled && state == "online" {
			break
		}
	}
	if state != "online" {
		t.Errorf("demo box cloud state %q, want online; stderr:\n%s", state, errOut.String())
	}
	// ... and records the synthetic camera.
	page := regexp.MustCompile(`Open the LAN page: +(https://\S+)`).FindStringSubmatch(out.String())
	m := regexp.MustCompile(`Viewer token \(a day\): +(\S+)`).FindStringSubmatch(out.String())
	if m == nil || page == nil {
		t.Fatalf("no LAN page URL or viewer token in:\n%s", out.String())
	}
	if resp, err := c.Get(page[1]); err != nil || resp.StatusCode != 200 {
		t.Errorf("LAN page %s: %v", page[1], err)
	} else {
		resp.Body.Close()
	}
	var camState string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		req, _ := http.NewRequest("GET", strings.TrimSuffix(page[1], "/")+"/api/v1/cameras", nil)
		req.Header.Set("Authorization", "Bearer "+m[1])
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var s struct{ Cameras []struct{ ID, State string } }
		json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if len(s.Cameras) == 1 {
			if camState = s.Cameras[0].State; camState == "online" {
				break
			}
		}
	}
	if camState != "online" {
		t.Errorf("demo camera state %q, want online", camState)
	}
	// Its recordings show up once the first segment closes: the demo keeps
	// the default segment length (a minute), so this waits for that, bounded.
	q := neturl.Values{"camera": {"demo"}, "start": {began.Add(-time.Minute).UTC().Format(time.RFC3339)},
		"end": {began.Add(time.Hour).UTC().Format(time.RFC3339)}}
	listURL := strings.TrimSuffix(page[1], "/") + "/api/v1/recordings?" + q.Encode()
	type listing struct {
		Segments []struct {
			Start    time.Time
			Duration float64 `json:"duration_s"`
			Bytes    int64
			Codecs   []string
		}
		Spans []struct{ Start, End time.Time }
	}
	var list listing
	get := func(url, tok string) int {
		req, _ := http.NewRequest("GET", url, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		list = listing{}
		json.NewDecoder(resp.Body).Decode(&list)
		return resp.StatusCode
	}
	if code := get(listURL+"&token="+neturl.QueryEscape(m[1]), ""); code < 400 {
		t.Errorf("the reusable viewer token in a URL: %d, want it refused", code)
	}
	for deadline := began.Add(demoFirstSegment); ; time.Sleep(time.Second) {
		if code := get(listURL, m[1]); code != 200 {
			t.Fatalf("GET %s: %d", listURL, code)
		}
		if len(list.Segments) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(list.Segments) == 0 || len(list.Spans) != 1 {
		t.Fatalf("demo camera: %d segments, spans %+v within %v of start-up; want its first segment", len(list.Segments), list.Spans, demoFirstSegment)
	}
	if sg := list.Segments[0]; sg.Duration < 1 || sg.Bytes == 0 || len(sg.Codecs) == 0 || sg.Codecs[0] != "H264" || sg.Start.Before(began.Add(-time.Second)) {
		t.Errorf("demo segment %+v", sg)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("demo exit code %d; stderr:\n%s", code, errOut.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 0, "commands:"},
		{[]string{"frobnicate"}, 2, "commands:"},
		{[]string{"image", "build", "--target", "sparc", "--out", "x.img"}, 2, "--target must be one of"},
		{[]string{"image", "build", "--target", "amd64"}, 2, "--out is required"},
		{[]string{"image", "build", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"version"}, 0, ""},
	} {
		var out, errOut bytes.Buffer
		code := Main(context.Background(), tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.want) {
			t.Errorf("%v: code %d, output %q; want %d containing %q", tc.args, code, out.String()+errOut.String(), tc.code, tc.want)
		}
	}
}
