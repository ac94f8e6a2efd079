//go:build linux

package ingest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// udpRecvBuffers returns the receive buffer (as the kernel reports it,
// twice what was asked) of each UDP socket of this process.
func udpRecvBuffers(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || !strings.HasPrefix(link, "socket:") {
			continue
		}
		fd, _ := strconv.Atoi(e.Name())
		if typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE); err != nil || typ != syscall.SOCK_DGRAM {
			continue
		}
		v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF)
		if err == nil {
			out[link] = v
		}
	}
	return out
}

// TestUDPReadBuffer: a camera on UDP gets the 4 MiB socket buffers that
// keep a key frame burst from overflowing (net.core.rmem_max permitting;
// below that the camera warns and carries on with the default). The
// sockets ingest opens are the ones that appear when the camera connects.
func TestUDPReadBuffer(t *testing.T) {
	max, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Skip(err)
	}
	if n, _ := strconv.Atoi(strings.TrimSpace(string(max))); n < UDPReadBufferSize {
		t.Skipf("net.core.rmem_max is %d, below %d: the camera falls back to the default buffer", n, UDPReadBufferSize)
	}
	srv := startServer(t, true)
	publish(t, srv.URL("cam"), testH264(320, 240, 25, 25))
	before := udpRecvBuffers(t)
	sink := newCheckSink()
	cam := runCamera(t, srv.URL("cam"), sink, func(c *Config) { c.Transport = "udp" })
	eventually(t, 10*time.Second, "25 frames over UDP", func() bool { return sink.count(0) >= 25 })
	var fresh []int
	for s, v := range udpRecvBuffers(t) {
		if _, ok := before[s]; !ok {
			fresh = append(fresh, v)
		}
	}
	// One video track: an RTP and an RTCP socket.
	if len(fresh) != 2 {
		t.Fatalf("camera opened %d UDP sockets (buffers %v), want 2", len(fresh), fresh)
	}
	for _, v := range fresh {
		if v < UDPReadBufferSize {
			t.Errorf("UDP receive buffer %d bytes, want %d", v, UDPReadBufferSize)
		}
	}
	if s := cam.Stats(); s.Lost != 0 {
		t.Errorf("lost %d packets on loopback", s.Lost)
	}
}
