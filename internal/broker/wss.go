package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/outpost-gw/outpost/internal/wsstream"
)

// wssPath is where the boxes open MQTT over WebSocket (wss://host:443/mqtt).
const wssPath = "/mqtt"

// wssListener is MQTT over WebSocket over TLS. It is ours rather than
// mochi's listeners.Websocket because that one binds only in Serve (so
// Address of "127.0.0.1:0" never tells the port) and hides the TLS
// connection, which the hook needs for the client certificate.
type wssListener struct {
	id       string
	ln       net.Listener // TLS, bound at construction
	srv      *http.Server
	log      *slog.Logger
	upgrader websocket.Upgrader
	once     sync.Once
}

func newWSS(id, addr string, tc *tls.Config) (*wssListener, error) {
	c := tc.Clone()
	c.NextProtos = []string{"http/1.1"} // WebSocket upgrades are HTTP/1.1
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &wssListener{
		id: id,
		ln: tls.NewListener(ln, c),
		upgrader: websocket.Upgrader{
			Subprotocols:     []string{"mqtt"},
			HandshakeTimeout: 10 * time.Second,
			// Boxes are not browsers: no Origin to check.
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}, nil
}

func (l *wssListener) ID() string       { return l.id }
func (l *wssListener) Address() string  { return l.ln.Addr().String() }
func (l *wssListener) Protocol() string { return "wss" }

func (l *wssListener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

func (l *wssListener) Serve(establish listeners.EstablishFn) {
	mux := http.NewServeMux()
	mux.HandleFunc(wssPath, func(w http.ResponseWriter, r *http.Request) {
		ws, err := l.upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade answered with an HTTP error
		}
		defer ws.Close()
		tc, ok := ws.UnderlyingConn().(*tls.Conn)
		if !ok {
			return
		}
		if err := establish(l.id, &wsConn{Conn: tc, tls: tc, stream: wsstream.Stream{WS: ws, StrictBinary: true}}); err != nil && l.log != nil {
			l.log.Debug("broker: websocket client", "err", err)
		}
	})
	l.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(l.log.Handler(), slog.LevelDebug)}
	if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) && l.log != nil {
		l.log.Error("broker: websocket listener", "err", err)
	}
}

func (l *wssListener) Close(closeClients listeners.CloseFn) {
	l.once.Do(func() {
		if l.srv != nil {
			l.srv.Close() // hijacked connections are closed by closeClients
		}
		l.ln.Close()
	})
	closeClients(l.id)
}

// wsConn is a byte stream over binary WebSocket messages; it keeps the TLS
// connection's state visible for the client certificate.
type wsConn struct {
	net.Conn // the TLS connection: addresses, deadlines, Close
	tls      *tls.Conn
	stream   wsstream.Stream
}

func (c *wsConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }
func (c *wsConn) Read(p []byte) (int, error)           { return c.stream.Read(p) }
func (c *wsConn) Write(p []byte) (int, error)          { return c.stream.Write(p) }
