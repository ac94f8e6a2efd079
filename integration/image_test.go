package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/outpost-gw/outpost/image"
)

// bootFiles lists the files of an image's FAT boot partition (mtools reads
// it in place, at the partition's offset).
func bootFiles(t *testing.T, img string, boot image.Partition) map[string]bool {
	t.Helper()
	out, err := exec.Command("mdir", "-i", fmt.Sprintf("%s@@%d", img, boot.Offset()), "-b", "-/", "::/").CombinedOutput()
	if err != nil {
		t.Fatalf("mdir: %v\n%s", err, out)
	}
	files := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			files[strings.TrimPrefix(l, "::/")] = true
		}
	}
	return files
}

// rootFiles lists a root partition's squashfs (unsquashfs reads it from a
// copy of the partition's bytes).
func rootFiles(t *testing.T, img string, root image.Partition) map[string]bool {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, root.Size())
	if _, err := f.ReadAt(buf, root.Offset()); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf, []byte("hsqs")) {
		t.Fatalf("root partition %d holds no squashfs", root.Number)
	}
	sq := t.TempDir() + "/root.squashfs"
	os.WriteFile(sq, buf, 0o600)
	out, err := exec.Command("unsquashfs", "-l", "-d", "", sq).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, out)
	}
	files := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "/") {
			files[l] = true
		}
	}
	return files
}

func checkImage(t *testing.T, img string, wantBoot, wantRoot, notRoot []string) {
	t.Helper()
	l, err := image.ReadLayout(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Check(); err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Partitions {
		t.Logf("partition %d %-12q %6d MB at %d", p.Number, p.Name, p.Size()>>20, p.Offset())
	}
	boot, _ := l.Partition(1)
	files := bootFiles(t, img, boot)
	for _, f := range wantBoot {
		if !files[f] {
			t.Errorf("boot partition lacks %s", f)
		}
	}
	// gokrazy's testboot inserts its flag before cmdline.txt's newline: the
	// newline must be there, right after the command line, padding after it.
	cmdline, err := image.ReadCmdline(img)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.IndexByte(cmdline, '\n'); i < 0 || len(bytes.TrimSpace(cmdline[i:])) != 0 || len(cmdline)-i < 60 {
		t.Errorf("cmdline.txt = %q: want the command line, a newline, then the padding", cmdline)
	}
	rootA, _ := l.Partition(2)
	root := rootFiles(t, img, rootA)
	for _, f := range wantRoot {
		if !root[f] {
			t.Errorf("root file system lacks %s", f)
		}
	}
	for _, f := range notRoot {
		if root[f] {
			t.Errorf("root file system has %s, which must not be in the image", f)
		}
	}
	perm, _ := l.Partition(4)
	f, _ := os.Open(img)
	defer f.Close()
	if !image.IsExt4(f, perm) {
		t.Error("partition 4 (/perm) is not formatted as ext4")
	}
}

// Files that would make the image reach the internet or open gokrazy's web
// interface to the network. (/etc/http-port.txt is always written; without a
// password file gokrazy listens only on its Unix socket.)
var forbiddenRoot = []string{
	"/gokrazy/heartbeat", "/gokrazy/ntp", "/etc/gokr-pw.txt",
}

func TestRPiImageLayout(t *testing.T) {
	requireTools(t, "mkfs.ext4", "mdir", "unsquashfs")
	img := buildImage(t, "rpi", "layout-test")
	checkImage(t, img,
		[]string{
			"vmlinuz", "cmdline.txt", "config.txt",
			// Pi 4 and Pi 5 device trees and the Pi 4 firmware.
			"bcm2711-rpi-4-b.dtb", "bcm2712-rpi-5-b.dtb", "start4.elf", "fixup4.dat",
			// EEPROM update for the Pi 4 bootloader.
			"pieeprom.upd", "pieeprom.sig", "recovery.bin",
		},
		[]string{"/user/outpostd", "/gokrazy/init", "/gokrazy/dhcp", "/gokrazy/randomd"},
		forbiddenRoot)
}

func TestAMD64ImageLayoutWithFleet(t *testing.T) {
	requireTools(t, "mkfs.ext4", "mdir", "unsquashfs")
	fleet := t.TempDir() + "/fleet.json"
	os.WriteFile(fleet, []byte(`{"name":"acme","broker_url":"mqtts://broker.acme.example:8883","ntp_servers":["ntp.acme.example"]}`), 0o600)
	img := buildImage(t, "amd64", "layout-test", "--fleet", fleet)
	checkImage(t, img,
		[]string{"vmlinuz", "cmdline.txt", "EFI/BOOT/BOOTX64.EFI"},
		[]string{"/user/outpostd", "/etc/outpost/fleet.json", "/gokrazy/ntp"},
		[]string{"/gokrazy/heartbeat", "/etc/gokr-pw.txt"})
}
