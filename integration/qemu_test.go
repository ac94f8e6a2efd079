package integration

import (
	"bytes"

	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/hardware/permgrow"
	"github.com/outpost-gw/outpost/internal/broker"
	"github.com/outpost-gw/outpost/internal/fleet"
	"github.com/outpost-gw/outpost/internal/operator"
)

// vm is the amd64 image running under qemu (TCG: KVM fails on these
// machines) with a restricted user network: the guest reaches nothing but
// the forwards the test sets up, and only from 127.0.0.1.
type vm struct {
	t         *testing.T
	cmd       *exec.Cmd
	done      chan error
	serial    string
	pcap      string
	httpsPort int
}

// bootVM starts qemu on img. Every packet the guest sends or receives is
// dumped to a pcap file, so a test can check what it tried to reach.
func bootVM(t *testing.T, img string, netOpts ...string) *vm {
	t.Helper()
	return startVM(t, img, false, netOpts...)
}

// startVM is bootVM; with reboots, a reboot of the guest restarts it in the
// same qemu process (an update reboots the box) instead of ending qemu.
func startVM(t *testing.T, img string, reboots bool, netOpts ...string) *vm {
	t.Helper()
	return startVMWith(t, img, vmOptions{reboots: reboots}, netOpts...)
}

// vmOptions: reboots as for startVM; uefi boots with OVMF (systemd-boot)
// instead of SeaBIOS (gokrazy's MBR loader).
type vmOptions struct{ reboots, uefi bool }

// OVMF firmware as Debian's ovmf package installs it.
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

func startVMWith(t *testing.T, img string, o vmOptions, netOpts ...string) *vm {
	t.Helper()
	requireTools(t, "qemu-system-x86_64")
	dir := t.TempDir()
	v := &vm{
		t:         t,
		done:      make(chan error, 1),
		serial:    filepath.Join(dir, "serial.log"),
		pcap:      filepath.Join(dir, "net.pcap"),
		httpsPort: freePort(t),
	}
	v.cmd = exec.Command("qemu-system-x86_64",
		"-machine", "q35", "-accel", "tcg", "-m", "1024", "-smp", "1",
		"-display", "none", "-monitor", "none",
		"-serial", "file:"+v.serial,
		"-drive", "file="+img+",format=raw,if=virtio",
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:443", v.httpsPort)+strings.Join(append([]string{""}, netOpts...), ","),
		"-device", "e1000,netdev=n0",
		"-object", "filter-dump,id=dump0,netdev=n0,file="+v.pcap,
	)
	if !o.reboots {
		v.cmd.Args = append(v.cmd.Args, "-no-reboot")
	}
	if o.uefi {
		vars, err := os.ReadFile(ovmfVars)
		if err != nil {
			if inCI() {
				t.Fatalf("OVMF is required in CI (.ci/run installs ovmf): %v", err)
			}
			t.Skipf("OVMF not installed: %v", err)
		}
		varsCopy := filepath.Join(dir, "OVMF_VARS.fd")
		os.WriteFile(varsCopy, vars, 0o600)
		v.cmd.Args = append(v.cmd.Args,
			"-drive", "if=pflash,format=raw,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,file="+varsCopy)
	}
	var stderr bytes.Buffer
	v.cmd.Stderr = &stderr
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("starting qemu: %v", err)
	}
	go func() {
		err := v.cmd.Wait()
		if err != nil && stderr.Len() > 0 {
			err = fmt.Errorf("%w: %s", err, stderr.String())
		}
		v.done <- err
	}()
	t.Cleanup(v.kill)
	return v
}

// kill cuts the VM's power: no shutdown, nothing flushed.
func (v *vm) kill() {
	if v.cmd.ProcessState == nil {
		v.cmd.Process.Kill()
		<-v.done
		v.done <- nil // later kills return at once
	}
}

func (v *vm) serialTail() string {
	b, _ := os.ReadFile(v.serial)
	lines := strings.Split(string(b), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// getJSON polls https://127.0.0.1:PORT/path until it answers 200 or the
// timeout passes. It returns the answer and the server's certificate hash.
func (v *vm) getJSON(path string, timeout time.Duration, into any) [32]byte {
	v.t.Helper()
	c := &http.Client{
		// The box's certificate is self-signed and made on its first boot;
		// the test checks it is the same one across boots instead.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		Timeout:   5 * time.Second,
	}
	url := fmt.Sprintf("https://127.0.0.1:%d%s", v.httpsPort, path)
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case err := <-v.done:
			v.done <- err
			v.t.Fatalf("qemu exited: %v\nserial console:\n%s", err, v.serialTail())
		default:
		}
		resp, err := c.Get(url)
		if err == nil {
			body := new(bytes.Buffer)
			body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if err := json.Unmarshal(body.Bytes(), into); err != nil {
					v.t.Fatalf("%s: %v: %s", path, err, body)
				}
				return sha256.Sum256(resp.TLS.PeerCertificates[0].Raw)
			}
			err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		lastErr = err
		time.Sleep(2 * time.Second)
	}
	v.t.Fatalf("%s did not answer within %v: %v\nserial console:\n%s", url, timeout, lastErr, v.serialTail())
	return [32]byte{}
}

type health struct {
	Version string `json:"version"`
	UptimeS int64  `json:"uptime_s"`
	BootID  string `json:"boot_id"`
}

type status struct {
	Version   string `json:"version"`
	Board     string `json:"board"`
	Fleet     string `json:"fleet"`
	BootCount uint64 `json:"boot_count"`
	DataDisk  struct {
		TotalBytes uint64 `json:"total_bytes"`
	} `json:"data_disk"`
	Cloud struct {
		DeviceID  string `json:"device_id"`
		Enrolled  bool   `json:"enrolled"`
		State     string `json:"state"`
		LastError string `json:"last_error"`
	} `json:"cloud"`
}

// guestBroker is where the VM finds the fleet's broker: qemu forwards the
// guest's connections to this address to a broker on the host's loopback.
const guestBroker = "10.0.2.100:8883"

// TestImageBootsInQEMU is the walking skeleton end to end: build the amd64
// image with the CLI and a real fleet, write it to a disk larger than the
// image (as an installer's SSD is), boot it, ask the box over the forwarded
// HTTPS port, and watch it enrol with the fleet's broker on the host (through
// guestfwd) and report. Then cut the power and boot again: state in /perm
// survives and the box reconnects as itself.
func TestImageBootsInQEMU(t *testing.T) {
	requireTools(t, "qemu-system-x86_64", "mkfs.ext4")
	version := fmt.Sprintf("itest-%d", time.Now().Unix())
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{
		Name: "itest-fleet", BrokerURL: "mqtts://" + guestBroker, BrokerHosts: []string{"10.0.2.100", "127.0.0.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	img := buildImage(t, "amd64", version, "--fleet", f.FleetFilePath())

	br, err := broker.StartFleet(f, "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	op, err := operator.Connect(t.Context(), f, operator.Options{BrokerURL: br.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	go op.ClaimAll(t.Context())
	telemetry := make(chan string, 100)
	op.Subscribe(func(m operator.Message) {
		if m.Stream == "telemetry" {
			select {
			case telemetry <- m.Device:
			default:
			}
		}
	})
	fwd := "guestfwd=tcp:" + guestBroker + "-cmd:" + stdiopipe(t) + " " + br.URL().Host

	const diskBytes = 3 << 30
	if err := os.Truncate(img, diskBytes); err != nil {
		t.Fatal(err)
	}

	v := bootVM(t, img, fwd)
	start := time.Now()
	var h health
	cert1 := v.getJSON("/healthz", 120*time.Second, &h)
	t.Logf("first boot: /healthz answered %.0fs after qemu started: %+v", time.Since(start).Seconds(), h)
	if h.Version != version || h.BootID == "" {
		t.Fatalf("healthz = %+v, want version %q and a boot id", h, version)
	}
	var s status
	v.getJSON("/api/v1/status", 10*time.Second, &s)
	t.Logf("status: %+v", s)
	if s.Fleet != "itest-fleet" || !strings.HasPrefix(s.Board, "vm") || s.BootCount != 1 {
		t.Errorf("status = %+v, want fleet itest-fleet, a vm board, boot 1", s)
	}
	// /perm starts at 1.1 GB; ext4's own metadata takes a few percent.
	if permBytes := uint64(diskBytes - 1157627904); s.DataDisk.TotalBytes < permBytes*9/10 {
		t.Errorf("/perm is %d bytes on a %d byte disk: it did not grow", s.DataDisk.TotalBytes, diskBytes)
	}
	if serial, _ := os.ReadFile(v.serial); !bytes.Contains(serial, []byte("outpost "+version+" up")) {
		t.Errorf("no ready line on the console:\n%s", v.serialTail())
	}
	dev := v.waitOnline(t, 90*time.Second)
	select {
	case got := <-telemetry:
		if got != dev {
			t.Errorf("telemetry from %s, want %s", got, dev)
		}
	case <-time.After(90 * time.Second):
		t.Error("no telemetry from the box")
	}
	if r, err := op.Command(t.Context(), dev, "ping", nil, 30*time.Second); err != nil || !r.OK {
		t.Errorf("ping the box in the VM: %+v %v", r, err)
	}
	v.kill()
	checkCapture(t, v.pcap)

	// Power cut, then boot again on the same disk.
	v2 := bootVM(t, img, fwd)
	var h2 health
	cert2 := v2.getJSON("/healthz", 120*time.Second, &h2)
	var s2 status
	v2.getJSON("/api/v1/status", 10*time.Second, &s2)
	if h2.BootID == h.BootID || s2.BootCount != 2 {
		t.Errorf("second boot: healthz %+v, status %+v: want a new boot id and boot 2", h2, s2)
	}
	if cert1 != cert2 {
		t.Error("the LAN certificate changed across a reboot: /perm did not keep it")
	}
	if s2.DataDisk.TotalBytes != s.DataDisk.TotalBytes {
		t.Errorf("/perm size changed across reboots: %d → %d", s.DataDisk.TotalBytes, s2.DataDisk.TotalBytes)
	}
	if dev2 := v2.waitOnline(t, 90*time.Second); dev2 != dev {
		t.Errorf("after the reboot the box is %s, was %s", dev2, dev)
	}
	v2.kill()
	// The partition table the box rewrote is valid (both CRCs, backup at
	// the new end) and partition 4 now ends at the disk's end.
	fh, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	plan, err := permgrow.PlanGrow(fh, diskBytes)
	if err != nil {
		t.Fatalf("partition table after the grow: %v", err)
	}
	if plan.NeedsGrow() {
		t.Errorf("after first boot the table still needs growing: %v", plan)
	}
}

// waitOnline polls the box's status until its cloud link is online and
// returns its device id.
func (v *vm) waitOnline(t *testing.T, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var s status
	for time.Now().Before(deadline) {
		v.getJSON("/api/v1/status", 10*time.Second, &s)
		if s.Cloud.Enrolled && s.Cloud.State == "online" {
			t.Logf("box %s enrolled and online", s.Cloud.DeviceID)
			return s.Cloud.DeviceID
		}
		time.Sleep(2 * time.Second)
	}
	t.Fatalf("the box did not come online with the fleet: cloud status %+v\nserial console:\n%s", s.Cloud, v.serialTail())
	return ""
}

// stdiopipe builds the helper qemu runs for each guestfwd connection.
func stdiopipe(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "stdiopipe")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.Command("go", "build", "-o", bin, "./internal/testutil/stdiopipe")
	cmd.Dir = repoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building stdiopipe: %v\n%s", err, out)
	}
	return bin
}

// checkCapture reads the pcap of the guest's network and fails on any packet
// the guest sent to something other than qemu's virtual LAN (10.0.2.0/24),
// broadcast or link-local multicast, and on any DNS or NTP query: without a
// fleet NTP server the image must not try to reach the internet at all.
func checkCapture(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 24 {
		t.Fatalf("reading capture: %v (%d bytes)", err, len(b))
	}
	if binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 {
		t.Fatalf("not a little-endian pcap file")
	}
	_, guestLAN, _ := net.ParseCIDR("10.0.2.0/24")
	b = b[24:]
	packets := 0
	for len(b) >= 16 {
		n := int(binary.LittleEndian.Uint32(b[8:]))
		if len(b) < 16+n {
			break
		}
		frame := b[16 : 16+n]
		b = b[16+n:]
		packets++
		if len(frame) < 14 {
			continue
		}
		var src, dst net.IP
		var proto byte
		var l4 []byte
		switch binary.BigEndian.Uint16(frame[12:]) {
		case 0x0800:
			ip := frame[14:]
			if len(ip) < 20 {
				continue
			}
			src, dst, proto = net.IP(ip[12:16]), net.IP(ip[16:20]), ip[9]
			l4 = ip[int(ip[0]&0x0f)*4:]
		case 0x86dd:
			ip := frame[14:]
			if len(ip) < 40 {
				continue
			}
			src, dst, proto = net.IP(ip[8:24]), net.IP(ip[24:40]), ip[6]
			l4 = ip[40:]
		default:
			continue
		}
		if src.Equal(net.IPv4(10, 0, 2, 2)) || src.Equal(net.IPv4(10, 0, 2, 3)) {
			continue // from qemu's gateway/DNS, not from the guest
		}
		if !(guestLAN.Contains(dst) || dst.Equal(net.IPv4bcast) || dst.IsLinkLocalMulticast() ||
			dst.IsInterfaceLocalMulticast() || dst.IsLinkLocalUnicast() || dst.IsLoopback()) {
			t.Errorf("guest sent a packet to %v (proto %d): the image must reach nothing outside the site", dst, proto)
		}
		if (proto == 6 || proto == 17) && len(l4) >= 4 {
			switch port := binary.BigEndian.Uint16(l4[2:]); port {
			case 53, 123:
				t.Errorf("guest sent a DNS/NTP packet (port %d) to %v", port, dst)
			}
		}
	}
	t.Logf("capture: %d packets checked", packets)
}
