package permgrow

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []mountInfo
		err      string
	}{
		{name: "empty", in: ""},
		{
			name: "gokrazy",
			in: "15 1 179:2 / / ro,relatime - squashfs /dev/root ro,errors=continue\n" +
				"\n" +
				"27 15 179:4 / /perm rw,relatime shared:7 master:1 - ext4 /dev/mmcblk0p4 rw\n",
			want: []mountInfo{
				{ID: 15, ParentID: 1, Major: 179, Minor: 2, Root: "/", MountPoint: "/", Options: "ro,relatime",
					FSType: "squashfs", Source: "/dev/root", SuperOptions: "ro,errors=continue"},
				{ID: 27, ParentID: 15, Major: 179, Minor: 4, Root: "/", MountPoint: "/perm", Options: "rw,relatime",
					Optional: []string{"shared:7", "master:1"}, FSType: "ext4", Source: "/dev/mmcblk0p4", SuperOptions: "rw"},
			},
		},
		{
			name: "escapes",
			in:   `40 27 259:4 /sub\134dir /mnt/my\040disk\011x rw - ext4 /dev/nvme0n1p4 rw,a\040b`,
			want: []mountInfo{{ID: 40, ParentID: 27, Major: 259, Minor: 4, Root: `/sub\dir`, MountPoint: "/mnt/my disk\tx",
				Options: "rw", FSType: "ext4", Source: "/dev/nvme0n1p4", SuperOptions: `rw,a\040b`}},
		},
		{
			name: "literal-backslash",
			in:   `1 0 8:4 / /a\9\4 rw - ext4 /dev/sda4 rw`,
			want: []mountInfo{{ID: 1, Major: 8, Minor: 4, Root: "/", MountPoint: `/a\9\4`, Options: "rw", FSType: "ext4", Source: "/dev/sda4", SuperOptions: "rw"}},
		},
		{name: "no-super-options", in: "1 0 8:4 / /perm rw - ext4 /dev/sda4", err: "at least 10 fields"},
		{name: "no-separator", in: "1 0 8:4 / /perm rw ext4 /dev/sda4 rw", err: "line 1"},
		{name: "separator-too-early", in: "1 0 8:4 / - rw ext4 /dev/sda4 rw", err: "separator"},
		{name: "short-after-separator", in: "1 0 8:4 / /perm rw - ext4", err: "at least 10 fields"},
		{name: "bad-devno", in: "1 0 8-4 / /perm rw - ext4 /dev/sda4 rw", err: "major:minor"},
		{name: "bad-minor", in: "1 0 8:x / /perm rw - ext4 /dev/sda4 rw", err: "major:minor"},
		{name: "bad-id", in: "x 0 8:4 / /perm rw - ext4 /dev/sda4 rw", err: "mount ID"},
		{name: "bad-second-line", in: "1 0 8:4 / / rw - ext4 /dev/sda4 rw\ngarbage", err: "line 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseMountinfo(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

func TestFindMount(t *testing.T) {
	mounts := []mountInfo{
		{ID: 1, MountPoint: "/"},
		{ID: 2, MountPoint: "/perm", FSType: "tmpfs"},
		{ID: 3, MountPoint: "/perm", FSType: "ext4"}, // mounted over ID 2
	}
	if m, ok := findMount(mounts, "/perm"); !ok || m.ID != 3 {
		t.Errorf("findMount(/perm) = %v, %v; want the top mount, ID 3", m, ok)
	}
	if _, ok := findMount(mounts, "/data"); ok {
		t.Errorf("findMount(/data) found something")
	}
}

// escapeMountinfo escapes a path field the way the kernel does.
func escapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ' ' || c == '\t' || c == '\n' || c == '\\' {
			fmt.Fprintf(&b, `\%03o`, c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add("27 15 179:4 / /perm rw,relatime shared:7 - ext4 /dev/mmcblk0p4 rw\n")
	f.Fuzz(func(t *testing.T, in string) {
		mounts, err := parseMountinfo(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, m := range mounts {
			if m.MountPoint == "" || m.FSType == "" || m.Source == "" || m.Options == "" || m.SuperOptions == "" {
				t.Fatalf("empty field in %#v", m)
			}
			// Writing the entry back out the kernel's way parses to itself.
			fields := []string{fmt.Sprint(m.ID), fmt.Sprint(m.ParentID), fmt.Sprintf("%d:%d", m.Major, m.Minor),
				escapeMountinfo(m.Root), escapeMountinfo(m.MountPoint), m.Options}
			fields = append(fields, m.Optional...)
			fields = append(fields, "-", escapeMountinfo(m.FSType), escapeMountinfo(m.Source), m.SuperOptions)
			again, err := parseMountinfoLine(strings.Join(fields, " "))
			if err != nil || !reflect.DeepEqual(again, m) {
				t.Fatalf("round trip of %#v gave %#v, %v", m, again, err)
			}
		}
	})
}

// fakeSysfs creates the sysfs layout of a disk with one partition:
// devices/.../<disk>/{dev,<part>/{dev,partition}} and the dev/block links.
func fakeSysfs(t *testing.T, disk, part string, partDev string, num int) string {
	t.Helper()
	root := t.TempDir()
	diskDir := filepath.Join(root, "devices", "platform", "ctrl", "block", disk)
	partDir := filepath.Join(diskDir, part)
	for _, f := range []struct{ path, content string }{
		{filepath.Join(diskDir, "dev"), "179:0\n"},
		{filepath.Join(partDir, "dev"), partDev + "\n"},
		{filepath.Join(partDir, "partition"), fmt.Sprintf("%d\n", num)},
	} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, []byte(f.content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "dev", "block"), 0o755); err != nil {
		t.Fatal(err)
	}
	for dev, dir := range map[string]string{partDev: partDir, "179:0": diskDir} {
		rel, err := filepath.Rel(filepath.Join(root, "dev", "block"), dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(rel, filepath.Join(root, "dev", "block", dev)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestResolvePartition(t *testing.T) {
	for _, tc := range []struct{ disk, part string }{
		{"sda", "sda4"}, {"vda", "vda4"}, {"mmcblk0", "mmcblk0p4"}, {"nvme0n1", "nvme0n1p4"},
	} {
		t.Run(tc.part, func(t *testing.T) {
			sysfs := fakeSysfs(t, tc.disk, tc.part, "259:3", 4)
			got, err := resolvePartition(sysfs, 259, 3)
			if err != nil {
				t.Fatal(err)
			}
			if want := (blockPartition{Disk: tc.disk, Part: tc.part, Number: 4, DiskDev: "179:0"}); got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
	sysfs := fakeSysfs(t, "sda", "sda4", "8:4", 4)
	if _, err := resolvePartition(sysfs, 179, 0); err == nil || !strings.Contains(err.Error(), "not a partition") {
		t.Errorf("whole disk: err = %v, want \"not a partition\"", err)
	}
	if _, err := resolvePartition(sysfs, 8, 9); err == nil {
		t.Errorf("unknown device: no error")
	}
}

func TestParseExt4Super(t *testing.T) {
	if _, err := parseExt4Super(make([]byte, 1024)); err == nil {
		t.Errorf("zeros parsed as a superblock")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 not installed")
	}
	for _, tc := range []struct {
		args    []string
		bs      uint64
		is64Bit bool
	}{
		{[]string{"-b", "1024", "-O", "^64bit"}, 1024, false},
		{[]string{"-b", "4096", "-O", "64bit"}, 4096, true},
	} {
		img := filepath.Join(t.TempDir(), "fs.img")
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 64<<20); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"-q", "-F"}, append(tc.args, img)...)
		if out, err := exec.Command(mkfs, args...).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4 %v: %v\n%s", args, err, out)
		}
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		sb := make([]byte, 1024)
		_, err = f.ReadAt(sb, 1024)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseExt4Super(sb)
		if want := (ext4Super{BlockSize: tc.bs, Blocks: 64 << 20 / tc.bs, Is64Bit: tc.is64Bit}); err != nil || got != want {
			t.Errorf("mkfs.ext4 %v: got %+v, %v; want %+v", tc.args, got, err, want)
		}
	}
}
