package cloudlink

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

// recConn records what is written, one Write at a time, yielding between
// Writes so that writers without a common lock interleave.
type recConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *recConn) Write(b []byte) (int, error) {
	runtime.Gosched()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(b)
}

// TestCountingConnKeepsPacketsWhole: paho writes a packet as several Writes
// and serialises packets only through the conn's sync.Locker; the byte
// counter must not hide it, or concurrent publishes garble each other (the
// broker then acknowledged a garbled PUBLISH: an entry lost after a
// reconnect burst, seen in TestOutpostdKill9NothingLost).
func TestCountingConnKeepsPacketsWhole(t *testing.T) {
	var up, down atomic.Int64
	rc := &recConn{}
	conn := newCountingConn(packets.NewThreadSafeConn(rc), &up, &down)
	if _, ok := net.Conn(conn).(sync.Locker); !ok {
		t.Fatal("countingConn is not a sync.Locker")
	}
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				p := &packets.Publish{Topic: fmt.Sprintf("t/%d", w), QoS: 1, PacketID: uint16(w*each + i + 1),
					Payload: []byte(fmt.Sprintf("%d/%d", w, i)), Properties: &packets.Properties{}}
				if _, err := p.WriteTo(conn); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if int(up.Load()) != rc.buf.Len() {
		t.Errorf("counted %d bytes up, wrote %d", up.Load(), rc.buf.Len())
	}
	for n := 0; n < writers*each; n++ {
		cp, err := packets.ReadPacket(&rc.buf)
		if err != nil {
			t.Fatalf("packet %d: %v", n, err)
		}
		p, ok := cp.Content.(*packets.Publish)
		if !ok {
			t.Fatalf("packet %d: %T", n, cp.Content)
		}
		var w, i int
		if _, err := fmt.Sscanf(string(p.Payload), "%d/%d", &w, &i); err != nil || p.Topic != fmt.Sprintf("t/%d", w) || p.PacketID != uint16(w*each+i+1) {
			t.Fatalf("packet %d garbled: topic %q id %d payload %q", n, p.Topic, p.PacketID, p.Payload)
		}
	}
	if rc.buf.Len() != 0 {
		t.Errorf("%d bytes left over", rc.buf.Len())
	}
}
