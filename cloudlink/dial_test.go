package cloudlink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/outpost-gw/outpost/cloudlink/identity"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/testutil/connectproxy"
)

// tlsEcho is a TLS server with the fleet's broker certificate that requires
// a fleet client certificate (rejecting those reject says so) and echoes.
func tlsEcho(t *testing.T, f *fleet.Fleet, reject func(*x509.Certificate) error) string {
	t.Helper()
	cf, kf := f.BrokerCertFiles()
	cert, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    f.CAPool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
			if reject != nil && len(chains) > 0 {
				return reject(chains[0][0])
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func enrolledTLS(t *testing.T, f *fleet.Fleet) *tls.Config {
	t.Helper()
	id, err := identity.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := id.CSR(id.Key)
	chain, err := f.Enrol(id.DeviceID(), id.ClaimCode(), csr, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := id.SetCertificate(chain); err != nil {
		t.Fatal(err)
	}
	c, _ := id.TLSCertificate()
	return &tls.Config{RootCAs: f.CAPool(), Certificates: []tls.Certificate{c}}
}

func TestDial(t *testing.T) {
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{Name: "t", BrokerURL: "mqtts://127.0.0.1:8883", BrokerHosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := fleet.Init(filepath.Join(t.TempDir(), "other"), fleet.InitOptions{Name: "o", BrokerURL: "mqtts://127.0.0.1:8883", BrokerHosts: []string{"127.0.0.1"}})
	good := enrolledTLS(t, f)
	addr := tlsEcho(t, f, nil)
	rejecting := tlsEcho(t, f, func(*x509.Certificate) error { return errors.New("no") })
	proxy, err := connectproxy.Start("site", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()

	for _, tc := range []struct {
		name  string
		addr  string
		tls   *tls.Config
		proxy *url.URL
		want  error
	}{
		{"direct", addr, good, nil, nil},
		{"through proxy", addr, good, proxy.URL, nil},
		{"wrong proxy password", addr, good, proxy.WithCredentials("site", "wrong"), ErrProxyAuth},
		{"wrong CA", addr, &tls.Config{RootCAs: other.CAPool(), Certificates: good.Certificates}, nil, ErrBrokerCA},
		{"certificate rejected", rejecting, good, nil, ErrCertRejected},
		{"no client certificate", addr, &tls.Config{RootCAs: f.CAPool()}, nil, ErrCertRejected},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Dialer{TLS: tc.tls, Proxy: tc.proxy}
			u := &url.URL{Scheme: "mqtts", Host: tc.addr}
			c, err := d.Dial(context.Background(), u)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Dial = %v, want %v", err, tc.want)
				}
				t.Logf("error as the box reports it: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("ping"))
			b := make([]byte, 4)
			if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
				t.Fatalf("echo: %q %v", b, err)
			}
		})
	}
	if proxy.Tunnels.Load() != 1 {
		t.Errorf("proxy opened %d tunnels, want 1", proxy.Tunnels.Load())
	}
	if _, err := (&Dialer{}).Dial(context.Background(), &url.URL{Scheme: "http", Host: "x"}); !errors.Is(err, ErrUnsupportedURL) {
		t.Errorf("http scheme: %v", err)
	}
	var _ net.Conn
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
