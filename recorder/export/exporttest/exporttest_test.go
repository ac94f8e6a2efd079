package exporttest

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// put sends one chunk (from = -1: a status query) and returns the status
// and Range, or the error of a dropped connection.
func put(t *testing.T, url string, from, total int, body []byte) (int, string, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	if from < 0 {
		req.Header.Set("Content-Range", fmt.Sprintf("bytes */%d", total))
	} else {
		req.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, from+len(body)-1, total))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Range"), nil
}

func TestServer(t *testing.T) {
	s := &Server{Sig: "k", Final: http.StatusCreated}
	srv := httptest.NewServer(s)
	defer srv.Close()
	u := srv.URL + "/a?sig=k"
	data := []byte("0123456789abcdef")

	s.Inject("/a", Drop)
	for _, step := range []struct {
		name      string
		from      int
		body      []byte
		code      int
		rng       string
		dropped   bool
		afterSize int
	}{
		{"nothing yet", -1, nil, 308, "", false, 0},
		{"dropped half-way", 0, data[:8], 0, "", true, 4},
		{"where it is", -1, nil, 308, "bytes=0-3", false, 4},
		{"not where it is", 0, data[:8], 400, "", false, 4},
		{"go on", 4, data[4:8], 308, "bytes=0-7", false, 8},
		{"the rest", 8, data[8:], 201, "", false, 16},
	} {
		code, rng, err := put(t, u, step.from, len(data), step.body)
		if step.dropped != (err != nil) || !step.dropped && (code != step.code || rng != step.rng) {
			t.Fatalf("%s: %d %q %v", step.name, code, rng, err)
		}
		if got, _ := s.File("/a"); len(got) != step.afterSize {
			t.Fatalf("%s: session holds %d bytes, want %d", step.name, len(got), step.afterSize)
		}
	}
	if got, done := s.File("/a"); !done || !bytes.Equal(got, data) {
		t.Errorf("file %q, complete %v", got, done)
	}
	if a := s.Applied("/a"); len(a) != 2 || a[0] != 4 || a[1] != 8 {
		t.Errorf("applied %v", a)
	}

	// A hang ends on Release; the session keeps its half.
	s.Release = make(chan struct{})
	s.Inject("", Hang)
	go func() { s.Release <- struct{}{} }()
	if _, _, err := put(t, srv.URL+"/b?sig=k", 0, 8, data[:8]); err == nil {
		t.Error("hung chunk answered")
	}
	if got, _ := s.File("/b"); len(got) != 4 {
		t.Errorf("hung session holds %d bytes", len(got))
	}

	if code, _, _ := put(t, srv.URL+"/c?sig=x", -1, 8, nil); code != 400 {
		t.Errorf("wrong sig: %d", code)
	}
	s.SetGone()
	if code, _, _ := put(t, srv.URL+"/c?sig=k", -1, 8, nil); code != 410 {
		t.Errorf("gone: %d", code)
	}
}
