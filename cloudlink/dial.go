package cloudlink

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/gorilla/websocket"

	"github.com/outpost-gw/outpost/internal/wsstream"
)

// Errors a person can act on, returned (wrapped) by Dial.
var (
	ErrProxyAuth      = errors.New("the HTTP proxy refused our credentials (check the proxy user and password)")
	ErrProxyRefused   = errors.New("the HTTP proxy refused the connection")
	ErrBrokerCA       = errors.New("the broker's certificate is not signed by the fleet CA (wrong broker or wrong CA in the fleet file)")
	ErrBrokerCertTime = errors.New("the broker's certificate is not valid at this box's time (expired, or the box's clock is wrong)")
	ErrBrokerName     = errors.New("the broker's certificate does not name the host in the broker URL")
	ErrRevoked        = errors.New("the broker says this box's certificate is revoked")
	ErrCertRejected   = errors.New("the broker rejected this box's certificate")
	ErrUnsupportedURL = errors.New("unsupported broker URL scheme (want mqtts:// or wss://)")
)

// Dialer opens the transport for MQTT: TLS over TCP (mqtts://, port 8883 by
// default, or 443), or WebSocket over TLS (wss://), directly or through an
// HTTP CONNECT proxy with basic auth. Failures come back as errors that name
// the cause rather than "broken pipe".
type Dialer struct {
	// TLS is the client configuration: fleet CA as RootCAs, the box's
	// certificate. ServerName is set per URL.
	TLS *tls.Config
	// Proxy is http://[user:password@]host:port, or nil for a direct link.
	Proxy *url.URL
	// Timeout bounds each step (TCP, proxy, TLS); default 15 s.
	Timeout time.Duration
	// ProbeAlert waits this long after the TLS handshake for the broker to
	// reject our certificate (TLS 1.3 reports that only after the
	// handshake); default 300 ms, negative disables.
	ProbeAlert time.Duration
}

// Dial connects to the broker at u. The returned conn is safe for
// concurrent writes, as autopaho requires.
func (d *Dialer) Dial(ctx context.Context, u *url.URL) (net.Conn, error) {
	timeout := d.Timeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, 3*timeout)
	defer cancel()
	switch u.Scheme {
	case "mqtts", "ssl", "tls", "mqtt", "tcp":
		host := u.Host
		if u.Port() == "" {
			if u.Scheme == "mqtt" || u.Scheme == "tcp" {
				host = net.JoinHostPort(u.Hostname(), "1883")
			} else {
				host = net.JoinHostPort(u.Hostname(), "8883")
			}
		}
		raw, err := d.dialTCP(ctx, host, timeout)
		if err != nil {
			return nil, err
		}
		if u.Scheme == "mqtt" || u.Scheme == "tcp" { // loopback demo/tests only (the fleet file enforces it)
			return packets.NewThreadSafeConn(raw), nil
		}
		conn, err := d.handshake(ctx, raw, u.Hostname(), timeout)
		if err != nil {
			raw.Close()
			return nil, err
		}
		return packets.NewThreadSafeConn(conn), nil
	case "wss", "ws":
		return d.dialWebSocket(ctx, u, timeout)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedURL, u.Scheme)
}

func (d *Dialer) dialTCP(ctx context.Context, hostport string, timeout time.Duration) (net.Conn, error) {
	nd := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if d.Proxy == nil {
		c, err := nd.DialContext(ctx, "tcp", hostport)
		if err != nil {
			return nil, fmt.Errorf("connecting to the broker %s: %w", hostport, err)
		}
		return c, nil
	}
	c, err := nd.DialContext(ctx, "tcp", d.Proxy.Host)
	if err != nil {
		return nil, fmt.Errorf("connecting to the HTTP proxy %s: %w", d.Proxy.Host, err)
	}
	if err := proxyConnect(c, d.Proxy, hostport, timeout); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// proxyConnect asks an HTTP proxy for a tunnel to hostport.
func proxyConnect(c net.Conn, proxy *url.URL, hostport string, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	req := "CONNECT " + hostport + " HTTP/1.1\r\nHost: " + hostport + "\r\n"
	if u := proxy.User; u != nil {
		pw, _ := u.Password()
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)) + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return fmt.Errorf("HTTP proxy %s: %w", proxy.Host, err)
	}
	br := bufio.NewReaderSize(c, 1) // read no further than the response: TLS follows
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return fmt.Errorf("HTTP proxy %s: reading its answer: %w", proxy.Host, err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusProxyAuthRequired:
		return fmt.Errorf("%w (%s: %s)", ErrProxyAuth, proxy.Host, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%w (%s: %s for %s)", ErrProxyRefused, proxy.Host, resp.Status, hostport)
	}
	if br.Buffered() > 0 {
		return fmt.Errorf("HTTP proxy %s sent data before the tunnel opened", proxy.Host)
	}
	return nil
}

func (d *Dialer) tlsConfig(serverName string) *tls.Config {
	c := d.TLS.Clone()
	if c == nil {
		c = &tls.Config{}
	}
	c.ServerName = serverName
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

func (d *Dialer) handshake(ctx context.Context, raw net.Conn, serverName string, timeout time.Duration) (*tls.Conn, error) {
	conn := tls.Client(raw, d.tlsConfig(serverName))
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		return nil, explainTLS(err)
	}
	if err := d.probe(conn); err != nil {
		return nil, err
	}
	return conn, nil
}

// probe gives the broker a moment to refuse our certificate: under TLS 1.3
// the client finishes its handshake before the server has checked the
// client certificate, and the refusal arrives as an alert on the first read
// (or, if we wrote first, as "broken pipe"). The MQTT client speaks first,
// so a read that times out means nothing was refused.
func (d *Dialer) probe(conn *tls.Conn) error {
	wait := d.ProbeAlert
	if wait == 0 {
		wait = 300 * time.Millisecond
	}
	if wait < 0 || conn.ConnectionState().Version < tls.VersionTLS13 {
		return nil
	}
	conn.SetReadDeadline(time.Now().Add(wait))
	var b [1]byte
	n, err := conn.Read(b[:])
	conn.SetReadDeadline(time.Time{})
	var ne net.Error
	switch {
	case n > 0:
		return errors.New("the broker spoke before the MQTT CONNECT: not an MQTT broker")
	case errors.As(err, &ne) && ne.Timeout():
		return nil
	}
	return explainTLS(err)
}

// explainTLS turns TLS failures into errors that say what to fix.
func explainTLS(err error) error {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	var ae tls.AlertError
	switch {
	case errors.As(err, &ua):
		return fmt.Errorf("%w: %v", ErrBrokerCA, err)
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return fmt.Errorf("%w (box time %s): %v", ErrBrokerCertTime, time.Now().UTC().Format(time.RFC3339), err)
	case errors.As(err, &he):
		return fmt.Errorf("%w: %v", ErrBrokerName, err)
	case errors.As(err, &ae) && ae == 44, strings.Contains(err.Error(), "revoked certificate"):
		return fmt.Errorf("%w: %v", ErrRevoked, err)
	case errors.As(err, &ae) && (ae == 42 || ae == 43 || ae == 45 || ae == 46 || ae == 48 || ae == 116),
		strings.Contains(err.Error(), "remote error: tls: bad certificate"),
		strings.Contains(err.Error(), "remote error: tls: unknown certificate"),
		strings.Contains(err.Error(), "remote error: tls: expired certificate"),
		strings.Contains(err.Error(), "certificate required"):
		return fmt.Errorf("%w: %v", ErrCertRejected, err)
	case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
		return fmt.Errorf("%w (the broker closed the connection during or right after TLS): %v", ErrCertRejected, err)
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("TLS handshake with the broker timed out: %w", err)
	}
	return fmt.Errorf("TLS with the broker: %w", err)
}

func (d *Dialer) dialWebSocket(ctx context.Context, u *url.URL, timeout time.Duration) (net.Conn, error) {
	wd := &websocket.Dialer{
		HandshakeTimeout: timeout,
		TLSClientConfig:  d.tlsConfig(u.Hostname()),
		Subprotocols:     []string{"mqtt"},
		NetDialContext:   (&net.Dialer{Timeout: timeout}).DialContext,
	}
	if d.Proxy != nil {
		wd.Proxy = http.ProxyURL(d.Proxy)
	}
	ws, resp, err := wd.DialContext(ctx, u.String(), nil)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusProxyAuthRequired {
				return nil, fmt.Errorf("%w: %v", ErrProxyAuth, err)
			}
			return nil, fmt.Errorf("broker WebSocket %s: %s: %w", u.Redacted(), resp.Status, err)
		}
		if d.Proxy != nil && (strings.Contains(err.Error(), "Proxy Authentication Required") || strings.Contains(err.Error(), "407")) {
			return nil, fmt.Errorf("%w: %v", ErrProxyAuth, err)
		}
		return nil, explainTLS(err)
	}
	return packets.NewThreadSafeConn(&wsConn{Conn: ws, stream: wsstream.Stream{WS: ws}}), nil
}

// wsConn adapts a WebSocket to a net.Conn for MQTT (binary messages).
type wsConn struct {
	*websocket.Conn
	stream wsstream.Stream
}

func (c *wsConn) Read(p []byte) (int, error)  { return c.stream.Read(p) }
func (c *wsConn) Write(p []byte) (int, error) { return c.stream.Write(p) }

func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}
