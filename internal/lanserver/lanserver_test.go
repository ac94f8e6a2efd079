package lanserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOrCreateCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	c1, created, err := LoadOrCreateCert(dir, []string{"outpost", "127.0.0.1"})
	if err != nil || !created {
		t.Fatalf("first: created=%v err=%v", created, err)
	}
	st, _ := os.Stat(filepath.Join(dir, KeyFile))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", st.Mode().Perm())
	}
	c2, created, err := LoadOrCreateCert(dir, nil)
	if err != nil || created {
		t.Fatalf("second: created=%v err=%v", created, err)
	}
	if string(c1.Certificate[0]) != string(c2.Certificate[0]) {
		t.Error("certificate changed on reload")
	}
	leaf, _ := x509.ParseCertificate(c1.Certificate[0])
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	// A corrupt key is an error, never silently replaced.
	os.WriteFile(filepath.Join(dir, KeyFile), []byte("garbage"), 0o600)
	if _, _, err := LoadOrCreateCert(dir, nil); err == nil {
		t.Error("corrupt key accepted")
	}
}

func TestRedirect(t *testing.T) {
	for _, tc := range []struct{ port, host, path, want string }{
		{"443", "box.lan", "/x?y=1", "https://box.lan/x?y=1"},
		{"443", "box.lan:80", "/", "https://box.lan/"},
		{"8443", "10.0.0.5:8080", "/healthz", "https://10.0.0.5:8443/healthz"},
		{"443", "[fe80::1]:80", "/", "https://[fe80::1]/"},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", tc.path, nil)
		req.Host = tc.host
		Redirect(tc.port).ServeHTTP(rec, req)
		if rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != tc.want {
			t.Errorf("%s%s → %d %q, want %q", tc.host, tc.path, rec.Code, rec.Header().Get("Location"), tc.want)
		}
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/", nil)
	req.Host = "evil.example/@x"
	Redirect("443").ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest {
		t.Errorf("bad host: %d", rec.Code)
	}
}

func TestServer(t *testing.T) {
	cert, _, err := LoadOrCreateCert(t.TempDir(), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "pong") })
	s := &Server{HTTPSAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Cert: cert, Handler: mux, Log: slog.New(slog.DiscardHandler)}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	pool := x509.NewCertPool()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	pool.AddCert(leaf)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get("http://" + s.HTTPListenAddr().String() + "/ping") // follows the redirect
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "pong" || resp.TLS == nil || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("got %q tls=%v headers=%v", b, resp.TLS != nil, resp.Header)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
