package main

import (
	"bufio"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// tuneGC trades some memory for CPU. The recorder makes one payload per
// video frame (about half a megabyte a second per 4 Mbit/s camera); with
// Go's default GOGC=100 over a heap of a few megabytes the collector runs
// several times a second, measured at about a fifth of outpostd's CPU with
// one camera (bench/recorder). GOGC=400 under a soft memory limit of an
// eighth of the RAM (64 MiB to 512 MiB) keeps collections rare while
// memory is plentiful; near the limit the collector works harder instead
// of the box running out. GOGC and GOMEMLIMIT in the environment win.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit(memTotal()))
	}
}

// memoryLimit is an eighth of total, within [64 MiB, 512 MiB].
func memoryLimit(total int64) int64 {
	return min(max(total/8, 64<<20), 512<<20)
}

// memTotal is MemTotal from /proc/meminfo in bytes, 0 if unknown.
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
