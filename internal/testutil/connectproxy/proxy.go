// Package connectproxy is an HTTP CONNECT proxy with optional basic auth,
// for tests of boxes behind a site proxy. It listens on loopback and tunnels
// bytes both ways; it counts the tunnels it opened.
package connectproxy

import (
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy is a running proxy.
type Proxy struct {
	URL     *url.URL // http://user:pass@127.0.0.1:port (credentials as configured)
	Tunnels atomic.Int64
	srv     *http.Server
	ln      net.Listener
	mu      sync.Mutex
	conns   []net.Conn
}

// Start runs a proxy on 127.0.0.1:0. With a non-empty user, clients must
// authenticate with user:password.
func Start(user, password string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, URL: &url.URL{Scheme: "http", Host: ln.Addr().String()}}
	if user != "" {
		p.URL.User = url.UserPassword(user, password)
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	p.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		if user != "" && r.Header.Get("Proxy-Authorization") != want {
			w.Header().Set("Proxy-Authenticate", `Basic realm="test"`)
			http.Error(w, "proxy authentication required", http.StatusProxyAuthRequired)
			return
		}
		up, err := net.DialTimeout("tcp", r.Host, 5*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			up.Close()
			return
		}
		down, rw, err := hj.Hijack()
		if err != nil {
			up.Close()
			return
		}
		io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
		p.Tunnels.Add(1)
		p.track(up, down)
		go func() {
			if n := rw.Reader.Buffered(); n > 0 {
				b, _ := rw.Reader.Peek(n)
				up.Write(b)
			}
			io.Copy(up, down)
			up.Close()
		}()
		go func() { io.Copy(down, up); down.Close() }()
	})}
	go p.srv.Serve(ln)
	return p, nil
}

func (p *Proxy) track(c ...net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c...)
	p.mu.Unlock()
}

// WithCredentials returns the proxy URL carrying other credentials.
func (p *Proxy) WithCredentials(user, password string) *url.URL {
	u := *p.URL
	u.User = url.UserPassword(user, password)
	return &u
}

// Close stops the proxy and cuts every tunnel.
func (p *Proxy) Close() {
	p.srv.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
