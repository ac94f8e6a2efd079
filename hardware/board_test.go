package hardware

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestDetectBoard(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	const (
		armCPU      = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
		x86CPU      = "processor\t: 0\nmodel name\t: Intel(R) Celeron(R) N5105 @ 2.00GHz\nflags\t\t: fpu vme de pse tsc msr sse sse2\n"
		x86GuestCPU = "processor\t: 0\nmodel name\t: QEMU Virtual CPU version 2.5+\nflags\t\t: fpu vme de pse hypervisor lahf_lm\n"
	)
	for _, tc := range []struct {
		name   string
		fs     fstest.MapFS
		goarch string
		want   Board
	}{
		{"pi4", fstest.MapFS{
			"proc/device-tree/model": file("Raspberry Pi 4 Model B Rev 1.4\x00"),
			"proc/cpuinfo":           file(armCPU),
		}, "arm64", Board{KindRaspberryPi, "Raspberry Pi 4 Model B Rev 1.4"}},
		{"pi5", fstest.MapFS{
			"proc/device-tree/model": file("Raspberry Pi 5 Model B Rev 1.0\x00"),
		}, "arm64", Board{KindRaspberryPi, "Raspberry Pi 5 Model B Rev 1.0"}},
		{"qemu q35", fstest.MapFS{
			"sys/class/dmi/id/sys_vendor":   file("QEMU\n"),
			"sys/class/dmi/id/product_name": file("Standard PC (Q35 + ICH9, 2009)\n"),
			"proc/cpuinfo":                  file(x86GuestCPU),
		}, "amd64", Board{KindVM, "QEMU Standard PC (Q35 + ICH9, 2009)"}},
		{"vmware", fstest.MapFS{
			"sys/class/dmi/id/sys_vendor":   file("VMware, Inc.\n"),
			"sys/class/dmi/id/product_name": file("VMware Virtual Platform\n"),
		}, "amd64", Board{KindVM, "VMware, Inc. VMware Virtual Platform"}},
		{"hyper-v", fstest.MapFS{
			"sys/class/dmi/id/sys_vendor":   file("Microsoft Corporation\n"),
			"sys/class/dmi/id/product_name": file("Virtual Machine\n"),
		}, "amd64", Board{KindVM, "Microsoft Corporation Virtual Machine"}},
		{"surface is not a vm", fstest.MapFS{
			"sys/class/dmi/id/sys_vendor":   file("Microsoft Corporation\n"),
			"sys/class/dmi/id/product_name": file("Surface Pro 7\n"),
			"proc/cpuinfo":                  file(x86CPU),
		}, "amd64", Board{KindX86, "Microsoft Corporation Surface Pro 7"}},
		{"hypervisor flag only", fstest.MapFS{
			"sys/class/dmi/id/sys_vendor":   file("Acme\n"),
			"sys/class/dmi/id/product_name": file("Custom SMBIOS\n"),
			"proc/cpuinfo":                  file(x86GuestCPU),
		}, "amd64", Board{KindVM, "Acme Custom SMBIOS"}},
		{"arm64 qemu virt", fstest.MapFS{
			"proc/device-tree/model":        file("linux,dummy-virt\x00"),
			"sys/class/dmi/id/sys_vendor":   file("QEMU\n"),
			"sys/class/dmi/id/product_name": file("QEMU Virtual Machine\n"),
		}, "arm64", Board{KindVM, "QEMU QEMU Virtual Machine"}},
		{"bare x86", fstest.MapFS{
			"sys/class/dmi/id/sys_vendor":   file("Intel(R) Client Systems\n"),
			"sys/class/dmi/id/product_name": file("NUC11TNHi5\n"),
			"proc/cpuinfo":                  file(x86CPU),
		}, "amd64", Board{KindX86, "Intel(R) Client Systems NUC11TNHi5"}},
		{"bare x86 without dmi", fstest.MapFS{
			"proc/cpuinfo": file(x86CPU),
		}, "amd64", Board{KindX86, "Intel(R) Celeron(R) N5105 @ 2.00GHz"}},
		{"empty amd64", fstest.MapFS{}, "amd64", Board{KindX86, ""}},
		{"empty arm64", fstest.MapFS{}, "arm64", Board{KindUnknown, ""}},
		{"other arm board", fstest.MapFS{
			"proc/device-tree/model": file("Radxa ROCK 5B\x00"),
		}, "arm64", Board{KindUnknown, "Radxa ROCK 5B"}},
		{"garbage", fstest.MapFS{
			"proc/device-tree/model":        file("\xff\xfe\x00\x01junk\x00\x00"),
			"sys/class/dmi/id/sys_vendor":   file(""),
			"sys/class/dmi/id/product_name": file("\x00\x00\x00"),
			"proc/cpuinfo":                  file("flags\t: " + strings.Repeat("x", 2<<20)),
		}, "arm64", Board{KindUnknown, "junk"}},
		{"oversized model", fstest.MapFS{
			"proc/device-tree/model": file("Raspberry Pi " + strings.Repeat("9", 1<<20)),
		}, "arm64", Board{KindUnknown, ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := detectBoard(tc.fs, tc.goarch); got != tc.want {
				t.Errorf("detectBoard = %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestBoardString(t *testing.T) {
	for _, tc := range []struct {
		b    Board
		want string
	}{
		{Board{KindRaspberryPi, "Raspberry Pi 5 Model B Rev 1.0"}, "rpi (Raspberry Pi 5 Model B Rev 1.0)"},
		{Board{Kind: KindX86}, "x86"},
		{Board{}, "unknown"},
	} {
		if got := tc.b.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.b, got, tc.want)
		}
	}
}

func TestCleanString(t *testing.T) {
	if got, want := cleanString([]byte(strings.Repeat("é", 200))), strings.Repeat("é", 128); got != want {
		t.Errorf("cleanString did not cap at 128 runes: got %d runes", len([]rune(got)))
	}
	if got := cleanString([]byte("  a\tb\x00\x7f c\n")); got != "a b c" {
		t.Errorf("cleanString = %q, want %q", got, "a b c")
	}
}
