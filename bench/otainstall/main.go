// Command otainstall measures the install path (signed manifest → fetch over
// loopback TLS → ota/install → fake Target writing a file, fsync'd) for one
// root image and prints its time and peak RSS beside `dd` of the same bytes
// to the same target file. Usage: go run ./bench/otainstall [-mb 256]
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/outpost-gw/outpost/internal/store"
	"github.com/outpost-gw/outpost/ota/install"
	"github.com/outpost-gw/outpost/ota/manifest"
)

func main() {
	mb := flag.Int("mb", 256, "image size in MiB")
	flag.Parse()
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
	st, err := store.Open(filepath.Join(dir, "db"), slog.New(slog.DiscardHandler))
	if err != nil {
		log.Fatal(err)
	}
	target := filepath.Join(dir, "slot")
	in := &install.Installer{Store: st, Root: root, HWTarget: "amd64", Target: &install.Fake{Path: target}, Client: srv.Client()}

	// dd first, so the page cache holds the image for both runs alike.
	t0 := time.Now()
	out, err := exec.Command("dd", "if="+img, "of="+target, "bs=1M", "conv=fsync", "status=none").CombinedOutput()
	if err != nil {
		log.Fatalf("dd: %v %s", err, out)
	}
	ddTime := time.Since(t0)
	os.Remove(target)

	t0 = time.Now()
	if err := in.Offer(context.Background(), keys, m); err != nil {
		log.Fatal(err)
	}
	instTime := time.Since(t0)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Printf("image %d MiB\n", *mb)
	fmt.Printf("dd bs=1M conv=fsync : %8.2f s  %7.1f MB/s\n", ddTime.Seconds(), float64(length)/1e6/ddTime.Seconds())
	fmt.Printf("ota/install (TLS fetch + sha256 + write + fsync + read-back re-hash): %8.2f s  %7.1f MB/s  ratio %.2fx dd\n",
		instTime.Seconds(), float64(length)/1e6/instTime.Seconds(), instTime.Seconds()/ddTime.Seconds())
	fmt.Printf("peak RSS of this process (server + installer): %d MB\n", ru.Maxrss/1024)
	_ = io.Discard
}
