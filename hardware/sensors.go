package hardware

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"strconv"
	"strings"
	"time"
)

// Sensors provides point-in-time readings for telemetry. Readings the
// machine cannot provide return an error wrapping ErrNotSupported.
type Sensors interface {
	// Temperature is the hottest thermal zone in degrees Celsius.
	Temperature() (float64, error)
	Memory() (MemInfo, error)
	// Disk reports the file system containing path.
	Disk(path string) (DiskUsage, error)
	Load() (LoadAvg, error)
	// Uptime is the time since boot.
	Uptime() (time.Duration, error)
}

// MemInfo is the RAM summary from /proc/meminfo. AvailableBytes is the
// kernel's estimate of memory usable without swapping (MemAvailable).
type MemInfo struct {
	TotalBytes, AvailableBytes uint64
}

// DiskUsage describes a file system. FreeBytes includes blocks reserved for
// root; AvailBytes is what unprivileged writers can still use.
type DiskUsage struct {
	TotalBytes, FreeBytes, AvailBytes uint64
}

// LoadAvg is the 1, 5 and 15 minute run-queue average from /proc/loadavg.
type LoadAvg struct {
	One, Five, Fifteen float64
}

// NewLinuxSensors returns Sensors reading procfs and sysfs under root (on
// the device, os.DirFS("/")). Disk ignores root and calls statfs(2) on the
// path as given, so it needs a real path.
func NewLinuxSensors(root fs.FS) Sensors { return linuxSensors{root} }

type linuxSensors struct{ root fs.FS }

func (s linuxSensors) Temperature() (float64, error) {
	const dir = "sys/class/thermal"
	entries, err := fs.ReadDir(s.root, dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("hardware: temperature: %w", err)
	}
	var (
		found    bool
		hottest  float64
		firstErr error
	)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "thermal_zone") {
			continue
		}
		// Disabled zones fail to read (EINVAL, ENODATA); skip them.
		c, err := readMilliCelsius(s.root, dir+"/"+e.Name()+"/temp")
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		if !found || c > hottest {
			hottest, found = c, true
		}
	}
	switch {
	case found:
		return hottest, nil
	case firstErr != nil:
		return 0, fmt.Errorf("hardware: temperature: no readable thermal zone: %w", firstErr)
	}
	return 0, fmt.Errorf("%w: no thermal zones", ErrNotSupported)
}

func readMilliCelsius(root fs.FS, name string) (float64, error) {
	b, err := readFile(root, name)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", name, err)
	}
	return float64(v) / 1000, nil
}

func (s linuxSensors) Memory() (MemInfo, error) {
	b, err := readFile(s.root, "proc/meminfo")
	if err != nil {
		return MemInfo{}, fmt.Errorf("hardware: memory: %w", err)
	}
	m, err := parseMeminfo(string(b))
	if err != nil {
		return MemInfo{}, fmt.Errorf("hardware: memory: %w", err)
	}
	return m, nil
}

// parseMeminfo extracts MemTotal and MemAvailable ("MemTotal: 123 kB").
// Lines for other keys are ignored even if malformed.
func parseMeminfo(s string) (MemInfo, error) {
	var m MemInfo
	var haveTotal, haveAvail bool
	for line := range strings.Lines(s) {
		key, val, ok := strings.Cut(line, ":")
		var dst *uint64
		switch key {
		case "MemTotal":
			dst, haveTotal = &m.TotalBytes, true
		case "MemAvailable":
			dst, haveAvail = &m.AvailableBytes, true
		default:
			continue
		}
		f := strings.Fields(val)
		if !ok || len(f) == 0 || len(f) > 2 {
			return MemInfo{}, fmt.Errorf("malformed meminfo line %q", strings.TrimSpace(line))
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return MemInfo{}, fmt.Errorf("meminfo %s: %w", key, err)
		}
		if len(f) == 2 {
			if f[1] != "kB" {
				return MemInfo{}, fmt.Errorf("meminfo %s: unknown unit %q", key, f[1])
			}
			if n > math.MaxUint64/1024 {
				return MemInfo{}, fmt.Errorf("meminfo %s: %d kB overflows", key, n)
			}
			n *= 1024
		}
		*dst = n
	}
	if !haveTotal || !haveAvail {
		return MemInfo{}, errors.New("meminfo lacks MemTotal or MemAvailable")
	}
	return m, nil
}

func (s linuxSensors) Load() (LoadAvg, error) {
	f, err := readFields(s.root, "proc/loadavg", 3)
	if err != nil {
		return LoadAvg{}, fmt.Errorf("hardware: load: %w", err)
	}
	return LoadAvg{One: f[0], Five: f[1], Fifteen: f[2]}, nil
}

func (s linuxSensors) Uptime() (time.Duration, error) {
	f, err := readFields(s.root, "proc/uptime", 1)
	if err != nil {
		return 0, fmt.Errorf("hardware: uptime: %w", err)
	}
	if f[0] >= math.MaxInt64/float64(time.Second) {
		return 0, fmt.Errorf("hardware: uptime: %v seconds out of range", f[0])
	}
	return time.Duration(f[0] * float64(time.Second)), nil
}

// readFields parses the first n whitespace-separated fields of name as
// finite, non-negative numbers.
func readFields(root fs.FS, name string, n int) ([]float64, error) {
	b, err := readFile(root, name)
	if err != nil {
		return nil, err
	}
	fields := strings.Fields(string(b))
	if len(fields) < n {
		return nil, fmt.Errorf("%s: want %d fields, got %d", name, n, len(fields))
	}
	out := make([]float64, n)
	for i := range out {
		v, err := strconv.ParseFloat(fields[i], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return nil, fmt.Errorf("%s: field %d: %v out of range", name, i+1, v)
		}
		out[i] = v
	}
	return out, nil
}

func (s linuxSensors) Disk(path string) (DiskUsage, error) { return statfs(path) }
