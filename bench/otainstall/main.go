// Command otainstall measures the install path of one root image and prints
// its time and the installing process's peak RSS beside `dd` of the same
// bytes to the same target file.
//
// As on a box: the installer (ota/install over the gokrazy target, in a
// child process of its own, like outpostd) verifies a signed manifest,
// fetches the image over loopback TLS, hashes it while it streams through
// gokrazy's update protocol (github.com/gokrazy/updater, PUT /update/root
// over a Unix socket, like /run/gokrazy-http.sock) to a server that writes
// it to the target file and fsyncs it (as gokrazy writes the inactive root
// partition), then reads the file back and re-hashes it, testboots and
// reboots (both only recorded). The artifact and update servers run in this
// parent process. Usage: go run ./bench/otainstall [-mb 256]
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/ota/install"
	"github.com/outpost-gw/outpost/ota/manifest"
)

// job is what the child installs.
type job struct {
	Socket, Target, Store, Cmdline string
	CAPEM                          []byte
	Root                           []ed25519.PublicKey
	Keys, Manifest                 []byte
}

func main() {
	mb := flag.Int("mb", 256, "image size in MiB")
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
	target := filepath.Join(dir, "slot")
	us := &install.UpdaterServer{Path: target}
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
	j := job{Socket: sock, Target: target, Store: filepath.Join(dir, "db"), Cmdline: cmdline, Root: root.Keys, Keys: keys, Manifest: m,
		CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})}
	jb, _ := json.Marshal(j)
	jobPath := filepath.Join(dir, "job.json")
	os.WriteFile(jobPath, jb, 0o600)

	// dd first, so the page cache holds the image for both runs alike.
	t0 := time.Now()
	out, err := exec.Command("dd", "if="+img, "of="+target, "bs=1M", "conv=fsync", "status=none").CombinedOutput()
	if err != nil {
		log.Fatalf("dd: %v %s", err, out)
	}
	ddTime := time.Since(t0)
	os.Remove(target)

	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(self, "-child", jobPath)
	cmd.Stderr = os.Stderr
	out, err = cmd.Output()
	if err != nil {
		log.Fatalf("installer: %v", err)
	}
	var res struct{ Seconds, Stream, Rehash float64 }
	if err := json.Unmarshal(out, &res); err != nil {
		log.Fatalf("installer said %q: %v", out, err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	rss := ru.Maxrss // KiB
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	fmt.Printf("image %d MiB\n", *mb)
	fmt.Printf("dd bs=1M conv=fsync                 : %7.2f s  %7.1f MB/s\n", ddTime.Seconds(), float64(length)/1e6/ddTime.Seconds())
	fmt.Printf("ota/install via gokrazy's updater   : %7.2f s  %7.1f MB/s  %.2fx dd  (TLS fetch + sha256 + /update/root + fsync + read-back re-hash)\n",
		res.Seconds, float64(length)/1e6/res.Seconds, res.Seconds/ddTime.Seconds())
	fmt.Printf("  of which verify+fetch+stream+fsync: %7.2f s, read-back re-hash %.2f s\n", res.Stream, res.Rehash)
	fmt.Printf("CPU of the installing process       : %7.2f s (user+sys)\n", cpu.Seconds())
	fmt.Printf("peak RSS of the installing process  : %.1f MB\n", float64(rss)/1024)
	fmt.Printf("update API calls                    : %v\n", us.Calls())
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
	var streamed, rehashed time.Duration
	in := &install.Installer{Store: st, Root: manifest.RootOfTrust{Keys: j.Root, Threshold: 1}, HWTarget: "amd64", Target: g, Client: client,
		Progress: func(e install.Event) {
			switch {
			case e.Phase == install.Verifying && e.Version != 0: // the written slot
				streamed = time.Since(t0)
			case e.Phase == install.Installed:
				verified, rehashed = true, time.Since(t0)-streamed
			}
		}}
	if err := in.Offer(ctx, j.Keys, j.Manifest); err != nil {
		log.Fatal(err)
	}
	if !verified {
		log.Fatal("the install did not reach installed")
	}
	json.NewEncoder(os.Stdout).Encode(map[string]float64{"Seconds": time.Since(t0).Seconds(), "Stream": streamed.Seconds(), "Rehash": rehashed.Seconds()})
}
