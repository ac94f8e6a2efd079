package bootcmd

import "testing"

func TestShortName(t *testing.T) {
	for in, want := range map[string]string{
		"cmdline.txt": "CMDLINE TXT", "vmlinuz": "VMLINUZ    ", "gokrazy.conf": "GOKRAZY CON", "loader": "LOADER     ",
	} {
		if got := shortName(in); got != want {
			t.Errorf("shortName(%q) = %q, want %q", in, got, want)
		}
	}
}
