// Command otainstall measures the install path of one root image and prints
// its time and the installing process's peak RSS beside `dd` of the same
// bytes to the same target.
//
// As on a box: the installer (ota/install over the gokrazy target, in a
// child process of its own, like outpostd) verifies a signed manifest,
// fetches the image over loopback TLS, hashes it while it streams through
// gokrazy's update protocol (github.com/gokrazy/updater, PUT /update/root
// over a Unix socket, like /run/gokrazy-http.sock) to a server that writes
// it to the target and fsyncs it (as gokrazy writes the inactive root
// partition), spot-checks the written slot from the medium, testboots and
// reboots (both only recorded). The artifact and update servers run in this
// parent process. The child then also times the full re-hash of the slot
// that the health gate runs during the trial boot (not part of the install).
//
// Targets (-devices): "sd" and "ssd" are a loop device throttled with the
// blkio controller to the sequential speeds of a Raspberry Pi 4's SD slot
// with a good A1/A2 card (write 25 MB/s, read 45 MB/s) and of a SATA SSD
// (write 450 MB/s, read 520 MB/s); they need root and cgroup v1 blkio
// (skipped with a note otherwise). "file" is a plain file on this machine's
// disk, through its page cache. Before each dd and each install the
// target's page cache is dropped.
//
// Usage: go run ./bench/otainstall [-mb 256] [-devices sd,ssd,file] [-runs 3]
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/ota/install"
	"github.com/outpost-gw/outpost/ota/manifest"
)

// device is a target profile: bytes per second written and read (0: not
// throttled, a plain file).
type device struct {
	name        string
	write, read int64
	about       string
}

var devices = []device{
	{"sd", 25e6, 45e6, "loop device throttled to a Pi 4 SD card (write 25 MB/s, read 45 MB/s)"},
	{"ssd", 450e6, 520e6, "loop device throttled to a SATA SSD (write 450 MB/s, read 520 MB/s)"},
	{"file", 0, 0, "a file on this machine's virtual disk (page cache, host cache)"},
}

// job is what the child installs.
type job struct {
	Socket, Target, Store, Cmdline string
	Length                         int64
	CAPEM                          []byte
	Root                           []ed25519.PublicKey
	Keys, Manifest                 []byte
}

func main() {
	mb := flag.Int("mb", 256, "image size in MiB")
	only := flag.String("devices", "sd,ssd,file", "targets, comma-separated: "+names())
	runs := flag.Int("runs", 3, "dd + install pairs per target")
	child := flag.String("child", "", "(internal) run the install described in this file")
	flag.Parse()
	if *child != "" {
		runChild(*child)
		return
	}
	dir, err := os.MkdirTemp("", "otabench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	img := filepath.Join(dir, "root.img")
	f, _ := os.Create(img)
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for i := 0; i < *mb; i++ {
		for j := range buf {
			buf[j] = byte(i*31 + j)
		}
		f.Write(buf)
		h.Write(buf)
	}
	f.Close()
	length := int64(*mb) << 20

	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, img) }))
	defer srv.Close()
	us := &install.UpdaterServer{}
	sock := filepath.Join(dir, "gokrazy-http.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, us)

	root, rootPrivs, _ := manifest.NewRootKeys(1, 1)
	pub, priv, _ := ed25519.GenerateKey(nil)
	keys, err := manifest.SignKeys(rootPrivs, manifest.KeysDocument{Version: 1, Expires: time.Now().Add(time.Hour), Threshold: 1, Keys: []ed25519.PublicKey{pub}})
	if err != nil {
		log.Fatal(err)
	}
	m, err := manifest.SignManifest([]ed25519.PrivateKey{priv}, manifest.Manifest{Version: 2, Target: "amd64", Expires: time.Now().Add(time.Hour),
		Artifacts: []manifest.Artifact{{Name: "root", URL: srv.URL + "/root.img", Length: length, SHA256: manifest.Digest(h.Sum(nil))}}})
	if err != nil {
		log.Fatal(err)
	}
	cmdline := filepath.Join(dir, "cmdline")
	os.WriteFile(cmdline, []byte("root=PARTUUID=2e18c40c-02 init=/gokrazy/init\n"), 0o600)
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}

	fmt.Printf("image %d MiB; install = verify + TLS fetch + sha256 + /update/root + fsync + spot check of the slot\n", *mb)
	fmt.Printf("%-5s %3s %9s %9s %8s %7s %9s %9s %9s %8s %8s\n", "dev", "run", "dd s", "install s", "x dd", "spot s", "gate s", "CPU s", "srv CPU s", "VmHWM MB", "MB/s")
	var summary []string
	for _, name := range strings.Split(*only, ",") {
		i := slices.IndexFunc(devices, func(d device) bool { return d.name == name })
		if i < 0 {
			log.Fatalf("unknown device %q (%s)", name, names())
		}
		d := devices[i]
		target, cleanup, err := d.open(dir, length)
		if err != nil {
			fmt.Printf("%-5s skipped: %v\n", d.name, err)
			summary = append(summary, fmt.Sprintf("%s: skipped (%v)", d.name, err))
			continue
		}
		us.Path = target
		var ratios, rss []float64
		for run := 1; run <= *runs; run++ {
			dropCache(target)
			t0 := time.Now()
			out, err := exec.Command("dd", "if="+img, "of="+target, "bs=1M", "conv=fsync", "status=none").CombinedOutput()
			if err != nil {
				cleanup()
				log.Fatalf("dd: %v %s", err, out)
			}
			ddTime := time.Since(t0)
			wipe(target, length)
			dropCache(target)

			j := job{Socket: sock, Target: target, Store: filepath.Join(dir, fmt.Sprintf("db-%s-%d", d.name, run)), Cmdline: cmdline, Root: root.Keys, Keys: keys, Manifest: m,
				CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), Length: length}
			jb, _ := json.Marshal(j)
			jobPath := filepath.Join(dir, "job.json")
			os.WriteFile(jobPath, jb, 0o600)
			cmd := exec.Command(self, "-child", jobPath)
			cmd.Stderr = os.Stderr
			srv0 := selfCPU()
			out, err = cmd.Output()
			srvCPU := selfCPU() - srv0
			if err != nil {
				cleanup()
				log.Fatalf("installer: %v", err)
			}
			var res result
			if err := json.Unmarshal(out, &res); err != nil {
				cleanup()
				log.Fatalf("installer said %q: %v", out, err)
			}
			ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
			cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			ratio := res.Seconds / ddTime.Seconds()
			ratios, rss = append(ratios, ratio), append(rss, res.HWM)
			fmt.Printf("%-5s %3d %9.2f %9.2f %7.2fx %7.2f %9.2f %9.2f %9.2f %8.1f %8.1f\n", d.name, run, ddTime.Seconds(), res.Seconds, ratio,
				res.Spot, res.Gate, cpu.Seconds(), srvCPU.Seconds(), res.HWM, float64(length)/1e6/res.Seconds)
		}
		cleanup()
		slices.Sort(ratios)
		summary = append(summary, fmt.Sprintf("%s (%s): install %.2f–%.2fx dd (median %.2fx), peak RSS ≤ %.1f MB",
			d.name, d.about, ratios[0], ratios[len(ratios)-1], ratios[len(ratios)/2], slices.Max(rss)))
	}
	fmt.Println("targets: install ≤ 1.2x dd, peak RSS ≤ 32 MB")
	for _, l := range summary {
		fmt.Println(" ", l)
	}
	calls := us.Calls()
	fmt.Printf("update API calls (last install): %v\n", calls[max(0, len(calls)-4):])
}

func names() string {
	var n []string
	for _, d := range devices {
		n = append(n, d.name)
	}
	return strings.Join(n, ", ")
}

// open makes the target: a plain file, or a loop device over a file,
// throttled through the root blkio cgroup (cgroup v1); cleanup lifts the
// throttle and detaches the device.
func (d device) open(dir string, length int64) (string, func(), error) {
	back := filepath.Join(dir, "slot-"+d.name)
	// Written out once, so that neither run pays for allocating the
	// backing file's blocks.
	bf, err := os.Create(back)
	if err != nil {
		return "", nil, err
	}
	zero := make([]byte, 1<<20)
	for n := int64(0); n < length+16<<20 && err == nil; n += int64(len(zero)) {
		_, err = bf.Write(zero)
	}
	if err = errors.Join(err, bf.Close()); err != nil {
		return "", nil, err
	}
	dropCache(back)
	if d.write == 0 {
		return back, func() { os.Remove(back) }, nil
	}
	const blkio = "/sys/fs/cgroup/blkio"
	if _, err := os.Stat(filepath.Join(blkio, "blkio.throttle.write_bps_device")); err != nil {
		return "", nil, errors.New("needs cgroup v1 blkio throttling (" + blkio + ")")
	}
	out, err := exec.Command("losetup", "-f", "--show", back).Output()
	if err != nil {
		return "", nil, fmt.Errorf("losetup (needs root): %w", err)
	}
	dev := strings.TrimSpace(string(out))
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		exec.Command("losetup", "-d", dev).Run()
		return "", nil, err
	}
	mm := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	set := func(file string, bps int64) error {
		return os.WriteFile(filepath.Join(blkio, file), []byte(fmt.Sprintf("%s %d\n", mm, bps)), 0o644)
	}
	cleanup := func() {
		set("blkio.throttle.write_bps_device", 0)
		set("blkio.throttle.read_bps_device", 0)
		exec.Command("losetup", "-d", dev).Run()
		os.Remove(back)
	}
	if err := errors.Join(set("blkio.throttle.write_bps_device", d.write), set("blkio.throttle.read_bps_device", d.read)); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("throttling %s: %w", dev, err)
	}
	return dev, cleanup, nil
}

// dropCache writes back and drops the target's page cache, so neither run
// finds the other's bytes cached.
func dropCache(path string) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	f.Sync()
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// wipe overwrites the image's first and last MiB, so the install cannot
// pass on what dd left.
func wipe(path string, length int64) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	z := make([]byte, 1<<20)
	f.WriteAt(z, 0)
	f.WriteAt(z, length-1<<20)
	f.Sync()
}

// selfCPU is this process's CPU time so far: the artifact and update
// servers, which on a box run elsewhere (artifacts) or in gokrazy's init.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type result struct{ Seconds, Stream, Spot, Gate, HWM float64 }

// vmHWM is this process's peak RSS in MB, from /proc/self/status (the
// child's own: rusage's maxrss of a child starts from its parent's RSS at
// the fork).
func vmHWM() float64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(v), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}

func runChild(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	var j job
	if err := json.Unmarshal(b, &j); err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(j.CAPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	ctx := context.Background()
	if p := os.Getenv("OTABENCH_CPUPROFILE"); p != "" {
		pf, err := os.Create(p)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(pf)
		defer pprof.StopCPUProfile()
	}
	t0 := time.Now()
	g, err := install.NewGokrazy(ctx, j.Socket) // as outpostd reaches /run/gokrazy-http.sock
	if err != nil {
		log.Fatal(err)
	}
	g.Cmdline = j.Cmdline
	g.InactiveRoot = func() (string, error) { return j.Target, nil }
	st, err := store.Open(j.Store, slog.New(slog.DiscardHandler))
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	verified := false
	var streamed, spotted time.Duration
	in := &install.Installer{Store: st, Root: manifest.RootOfTrust{Keys: j.Root, Threshold: 1}, HWTarget: "amd64", Target: g, Client: client,
		Progress: func(e install.Event) {
			switch {
			case e.Phase == install.Verifying && e.Version != 0: // the written slot
				streamed = time.Since(t0)
			case e.Phase == install.Installed:
				verified, spotted = true, time.Since(t0)-streamed
			}
		}}
	if err := in.Offer(ctx, j.Keys, j.Manifest); err != nil {
		log.Fatal(err)
	}
	if !verified {
		log.Fatal("the install did not reach installed")
	}
	total := time.Since(t0)
	// The gate's full re-hash of the slot (from the medium), as the trial
	// boot runs it beside the health check.
	t1 := time.Now()
	slot, err := g.ReadBack("root")
	if err != nil {
		log.Fatal(err)
	}
	hh := sha256.New()
	if _, err := io.Copy(hh, io.NewSectionReader(slot, 0, j.Length)); err != nil {
		log.Fatal(err)
	}
	slot.Close()
	gate := time.Since(t1)
	json.NewEncoder(os.Stdout).Encode(result{Seconds: total.Seconds(), Stream: streamed.Seconds(), Spot: spotted.Seconds(), Gate: gate.Seconds(), HWM: vmHWM()})
}
