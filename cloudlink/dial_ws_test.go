package cloudlink

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/testutil/connectproxy"
)

// TestDialWebSocket: port 443 by WebSocket over TLS, with the box's client
// certificate, directly and through the site's proxy; MQTT bytes cross
// intact in both directions, split and joined across messages.
func TestDialWebSocket(t *testing.T) {
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{Name: "t", BrokerURL: "wss://127.0.0.1/mqtt", BrokerHosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := f.BrokerCertFiles()
	cert, _ := tls.LoadX509KeyPair(cf, kf)
	up := websocket.Upgrader{Subprotocols: []string{"mqtt"}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/mqtt" || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			// Echo in two messages, to exercise reassembly.
			c.WriteMessage(websocket.BinaryMessage, b[:len(b)/2])
			c.WriteMessage(websocket.BinaryMessage, b[len(b)/2:])
		}
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: f.CAPool(), ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()
	proxy, err := connectproxy.Start("site", "pw")
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	u, _ := url.Parse(srv.URL)
	u.Scheme, u.Path = "wss", "/mqtt"
	good := enrolledTLS(t, f)
	for _, tc := range []struct {
		name  string
		proxy *url.URL
		want  error
	}{
		{"direct", nil, nil},
		{"through proxy", proxy.URL, nil},
		{"wrong proxy password", proxy.WithCredentials("site", "nope"), ErrProxyAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := (&Dialer{TLS: good, Proxy: tc.proxy}).Dial(context.Background(), u)
			if tc.want != nil {
				if err == nil || !errorsIs(err, tc.want) {
					t.Fatalf("Dial = %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("0123456789"))
			b := make([]byte, 10)
			if _, err := io.ReadFull(c, b); err != nil || string(b) != "0123456789" {
				t.Fatalf("echo %q %v", b, err)
			}
		})
	}
}
