package main

import "testing"

func TestMemoryLimit(t *testing.T) {
	for _, tc := range []struct{ total, want int64 }{
		{0, 64 << 20},         // unknown
		{256 << 20, 64 << 20}, // a small board
		{2 << 30, 256 << 20},  // a Pi 4 with 2 GB
		{8 << 30, 512 << 20},  // capped
	} {
		if got := memoryLimit(tc.total); got != tc.want {
			t.Errorf("memoryLimit(%d) = %d, want %d", tc.total, got, tc.want)
		}
	}
	if memTotal() <= 0 {
		t.Error("no MemTotal in /proc/meminfo")
	}
}
