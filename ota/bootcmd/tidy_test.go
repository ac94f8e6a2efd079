package bootcmd

import (
	"strings"
	"testing"
)

func TestTidyBytes(t *testing.T) {
	const cmd = "console=ttyS0,115200 root=PARTUUID=2e18c40c-03 init=/gokrazy/init rootwait"
	pad := func(s string, n int) string { return s + strings.Repeat(" ", n-len(s)) }
	n := len(cmd) + 64
	clean := pad(cmd+"\n", n)
	// What gokrazy leaves after one and after two trial boots (switch_on_boot
	// written over try_boot_inactive, 3 spaces of shrink before the newline).
	once := pad(cmd+" "+SwitchOnBoot+"   \n", n)
	twice := pad(cmd+" "+SwitchOnBoot+"    "+SwitchOnBoot+"   \n", n)
	for _, tc := range []struct {
		name, in, want string
		changed        bool
	}{
		{"clean", clean, clean, false},
		{"after one trial", once, clean, true},
		{"after two trials", twice, clean, true},
		{"testboot armed: left alone", pad(cmd+" "+TryBootInactive+"\n", n), pad(cmd+" "+TryBootInactive+"\n", n), false},
		{"no newline: left alone", pad(cmd, n), pad(cmd, n), false},
		{"text after the newline: left alone", cmd + "\nxyz", cmd + "\nxyz", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := TidyBytes([]byte(tc.in))
			if string(got) != tc.want || changed != tc.changed || len(got) != len(tc.in) {
				t.Errorf("TidyBytes(%q) = %q, %v; want %q, %v", tc.in, got, changed, tc.want, tc.changed)
			}
		})
	}
	// Three updates in a row fit once tidied after each: testboot's edit
	// (replace "\n", cut at the length) keeps its flag every time.
	b := []byte(clean)
	for i := 0; i < 3; i++ {
		tb := []byte(strings.ReplaceAll(string(b), "\n", " "+TryBootInactive+"\n")[:len(b)])
		if !strings.Contains(string(tb), TryBootInactive+"\n") {
			t.Fatalf("update %d: testboot's flag cut: %q", i+1, tb)
		}
		spent := strings.Replace(string(tb), TryBootInactive, SwitchOnBoot, 1)
		spent = strings.Replace(spent, "\n", "   \n", 1)[:len(b)]
		b, _ = TidyBytes([]byte(spent))
	}
	if string(b) != clean {
		t.Errorf("after three tidied updates: %q", b)
	}
}

func TestBootPartition(t *testing.T) {
	const info = `21 1 254:2 / / ro,relatime shared:1 - squashfs /dev/root ro
30 21 0:23 / /proc rw - proc proc rw
35 21 %s / /perm rw,relatime shared:9 - ext4 %s rw
`
	for dev, want := range map[string]string{"/dev/vda4": "/dev/vda1", "/dev/mmcblk0p4": "/dev/mmcblk0p1", "/dev/nvme0n1p4": "/dev/nvme0n1p1", "/dev/sda4": "/dev/sda1"} {
		got, err := BootPartition(strings.NewReader(strings.ReplaceAll(strings.Replace(info, "%s", "254:4", 1), "%s", dev)), "/perm")
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", dev, got, err, want)
		}
	}
	if _, err := BootPartition(strings.NewReader(strings.Replace(strings.Replace(info, "%s", "1:1", 1), "%s", "/dev/root", 1)), "/perm"); err == nil {
		t.Error("accepted an unnumbered device")
	}
	if _, err := BootPartition(strings.NewReader("30 21 0:23 / /proc rw - proc proc rw\n"), "/perm"); err == nil {
		t.Error("found an unmounted /perm")
	}
}

func TestTidyEntry(t *testing.T) {
	const opts = "options console=ttyS0,115200 root=PARTUUID=60c24cc1-f3f9-427a-8199-4b40de910001/PARTNROFF=1 ro init=/gokrazy/init"
	gok := "title gokrazy\nlinux /vmlinuz\n" + opts + strings.Repeat(" ", 64)
	n := len(gok)
	pad := func(s string) string { return s + strings.Repeat(" ", n-len(s)) }
	fixed := pad("title gokrazy\n" + opts + "\nlinux /vmlinuz")
	for _, tc := range []struct {
		name, in, want string
		changed        bool
	}{
		{"as gok writes it", gok, fixed, true},
		{"fixed", fixed, fixed, false},
		{"after a trial", pad("title gokrazy " + SwitchOnBoot + "   \n" + opts + " " + SwitchOnBoot + "   \nlinux /vmlinuz"), fixed, true},
		{"testboot armed: left alone", pad("title gokrazy " + TryBootInactive + "\n" + opts + " " + TryBootInactive + "\nlinux /vmlinuz"), "", false},
		{"no linux line: left alone", pad("title gokrazy\n" + opts), "", false},
		{"linux with arguments: left alone", pad("title gokrazy\nlinux /vmlinuz x\n" + opts), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == "" {
				want = tc.in
			}
			got, changed := TidyEntry([]byte(tc.in))
			if string(got) != want || changed != tc.changed {
				t.Errorf("TidyEntry(%q) = %q, %v; want %q, %v", tc.in, got, changed, want, tc.changed)
			}
		})
	}
	// What testboot then does: the flag on title and options, the linux
	// line intact (cut at the file's length).
	tb := strings.ReplaceAll(fixed, "\n", " "+TryBootInactive+"\n")[:n]
	if !strings.Contains(tb, opts+" "+TryBootInactive+"\nlinux /vmlinuz") {
		t.Errorf("after testboot: %q", tb)
	}
}
