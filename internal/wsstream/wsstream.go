// Package wsstream reads and writes MQTT's byte stream as binary WebSocket
// messages (MQTT over WebSocket), for the box's dialer and the embedded
// broker alike.
package wsstream

import (
	"errors"
	"io"

	"github.com/gorilla/websocket"
)

// ErrNotBinary is returned by a Stream that refuses text messages.
var ErrNotBinary = errors.New("websocket message is not binary")

// Stream is a byte stream over a WebSocket's binary messages.
type Stream struct {
	WS *websocket.Conn
	// StrictBinary refuses a non-binary message with ErrNotBinary instead
	// of skipping it.
	StrictBinary bool
	r            io.Reader
}

// Read reads across message boundaries.
func (s *Stream) Read(p []byte) (int, error) {
	for {
		if s.r == nil {
			typ, r, err := s.WS.NextReader()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				if s.StrictBinary {
					return 0, ErrNotBinary
				}
				continue
			}
			s.r = r
		}
		n, err := s.r.Read(p)
		if errors.Is(err, io.EOF) {
			s.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary message.
func (s *Stream) Write(p []byte) (int, error) {
	if err := s.WS.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
