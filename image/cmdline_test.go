package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-gw/outpost/ota/bootcmd"
)

// TestFixCmdline makes a FAT16 file system with mtools, as gok lays out a
// boot partition (cmdline.txt padded with 64 spaces, no newline), fixes it in
// place and reads it back with mtools: same length, a newline right after the
// command line, and gokrazy's testboot edit (replace "\n") then keeps its flag.
func TestFixCmdline(t *testing.T) {
	for _, tool := range []string{"mformat", "mcopy", "mtype", "mmd"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is required in CI: %v", tool, err)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	fs := filepath.Join(dir, "boot.fat")
	if err := os.WriteFile(fs, make([]byte, 32<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	run("mformat", "-i", fs, "::") // 32 MB: FAT16, as gokrazy writes
	const cmdline = "console=tty1 console=ttyS0,115200 root=PARTUUID=2e18c40c-02 init=/gokrazy/init rootwait panic=10 oops=panic"
	src := filepath.Join(dir, "cmdline.txt")
	os.WriteFile(src, []byte(cmdline+strings.Repeat(" ", 64)), 0o600)
	run("mcopy", "-i", fs, filepath.Join(dir, "cmdline.txt"), "::/vmlinuz") // another file first
	run("mcopy", "-i", fs, src, "::/cmdline.txt")
	// The systemd-boot entry as gok writes it (a long file name).
	entry := "title gokrazy\nlinux /vmlinuz\noptions " + cmdline + strings.Repeat(" ", 64)
	os.WriteFile(filepath.Join(dir, "gokrazy.conf"), []byte(entry), 0o600)
	run("mmd", "-i", fs, "::/loader", "::/loader/entries")
	run("mcopy", "-i", fs, filepath.Join(dir, "gokrazy.conf"), "::/loader/entries/gokrazy.conf")

	f, err := os.OpenFile(fs, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := fixCmdlineFAT(f, 0); err != nil {
		t.Fatal(err)
	}
	got := run("mtype", "-i", fs, "::/cmdline.txt")
	want := cmdline + "\n" + strings.Repeat(" ", 63)
	if got != want {
		t.Fatalf("cmdline.txt = %q, want %q", got, want)
	}
	// Idempotent.
	if err := fixCmdlineFAT(f, 0); err != nil {
		t.Fatal(err)
	}
	if got2 := run("mtype", "-i", fs, "::/cmdline.txt"); got2 != want {
		t.Fatalf("second fix changed it: %q", got2)
	}
	// What gokrazy's enableTestboot does, cut at the file's length.
	tb := strings.ReplaceAll(got, "\n", " gokrazy.try_boot_inactive=1\n")[:len(got)]
	if !strings.Contains(tb, "gokrazy.try_boot_inactive=1\n") {
		t.Errorf("after testboot's edit: %q", tb)
	}
	// FixCmdline's second step, on the entry: found by its long name, the
	// linux line moved last.
	if _, err := bootcmd.TidyFile(f, 0, bootcmd.EntryPath, bootcmd.TidyEntry); err != nil {
		t.Fatal(err)
	}
	wantEntry := "title gokrazy\noptions " + cmdline + "\nlinux /vmlinuz"
	if got := run("mtype", "-i", fs, "::/loader/entries/gokrazy.conf"); got != wantEntry+strings.Repeat(" ", len(entry)-len(wantEntry)) {
		t.Errorf("gokrazy.conf = %q", got)
	}
	if _, _, err := bootcmd.Extents(f, 0, "/nothere.txt"); err == nil {
		t.Error("found a missing file")
	}
}
