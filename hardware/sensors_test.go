package hardware

import (
	"errors"
	"io/fs"
	"testing"
	"testing/fstest"
	"time"
)

func mapFS(files map[string]string) fstest.MapFS {
	m := fstest.MapFS{}
	for name, data := range files {
		m[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return m
}

func TestMemory(t *testing.T) {
	const sample = "MemTotal:        3884360 kB\nMemFree:          310052 kB\nMemAvailable:    2925384 kB\nBuffers:          163480 kB\nHugePages_Total:       0\n"
	for _, tc := range []struct {
		name    string
		files   map[string]string
		want    MemInfo
		wantErr bool
	}{
		{"real", map[string]string{"proc/meminfo": sample}, MemInfo{3884360 * 1024, 2925384 * 1024}, false},
		{"no unit means bytes", map[string]string{"proc/meminfo": "MemTotal: 1000\nMemAvailable: 500\n"}, MemInfo{1000, 500}, false},
		{"ignores malformed other keys", map[string]string{"proc/meminfo": "Junk\nFoo: bar baz qux\nMemTotal: 2 kB\nMemAvailable: 1 kB"}, MemInfo{2048, 1024}, false},
		{"missing file", nil, MemInfo{}, true},
		{"empty", map[string]string{"proc/meminfo": ""}, MemInfo{}, true},
		{"missing MemAvailable", map[string]string{"proc/meminfo": "MemTotal: 2 kB\nMemFree: 1 kB\n"}, MemInfo{}, true},
		{"not a number", map[string]string{"proc/meminfo": "MemTotal: lots kB\nMemAvailable: 1 kB\n"}, MemInfo{}, true},
		{"negative", map[string]string{"proc/meminfo": "MemTotal: -2 kB\nMemAvailable: 1 kB\n"}, MemInfo{}, true},
		{"no value", map[string]string{"proc/meminfo": "MemTotal:\nMemAvailable: 1 kB\n"}, MemInfo{}, true},
		{"unknown unit", map[string]string{"proc/meminfo": "MemTotal: 2 MB\nMemAvailable: 1 kB\n"}, MemInfo{}, true},
		{"overflow", map[string]string{"proc/meminfo": "MemTotal: 18446744073709551615 kB\nMemAvailable: 1 kB\n"}, MemInfo{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NewLinuxSensors(mapFS(tc.files)).Memory()
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("Memory() = %+v, %v; want %+v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       LoadAvg
		wantErr    bool
	}{
		{"real", "0.52 0.58 0.59 1/1234 5678\n", LoadAvg{0.52, 0.58, 0.59}, false},
		{"empty", "", LoadAvg{}, true},
		{"too few fields", "1.0 2.0\n", LoadAvg{}, true},
		{"words", "abc def ghi\n", LoadAvg{}, true},
		{"nan", "NaN 1 1\n", LoadAvg{}, true},
		{"negative", "-1 0 0\n", LoadAvg{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NewLinuxSensors(mapFS(map[string]string{"proc/loadavg": tc.data})).Load()
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("Load() = %+v, %v; want %+v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestUptime(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       time.Duration
		wantErr    bool
	}{
		{"real", "12345.67 23456.78\n", 12345670 * time.Millisecond, false},
		{"empty", "", 0, true},
		{"garbage", "up since tuesday\n", 0, true},
		{"out of range", "1e300 0\n", 0, true},
		{"inf", "+Inf 0\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NewLinuxSensors(mapFS(map[string]string{"proc/uptime": tc.data})).Uptime()
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("Uptime() = %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestTemperature(t *testing.T) {
	const z = "sys/class/thermal/thermal_zone"
	for _, tc := range []struct {
		name        string
		files       map[string]string
		want        float64
		wantErr     bool
		unsupported bool
	}{
		{"single zone", map[string]string{z + "0/temp": "48312\n"}, 48.312, false, false},
		{"max of zones", map[string]string{z + "0/temp": "45000\n", z + "1/temp": "52500\n", z + "2/temp": "-5000\n"}, 52.5, false, false},
		{"below zero", map[string]string{z + "0/temp": "-5000\n"}, -5, false, false},
		{"skips broken zone", map[string]string{z + "0/temp": "garbage", z + "1/temp": "40000"}, 40, false, false},
		{"no thermal class (vm)", nil, 0, true, true},
		{"only cooling devices", map[string]string{"sys/class/thermal/cooling_device0/type": "Processor\n"}, 0, true, true},
		{"all zones broken", map[string]string{z + "0/temp": "", z + "1/type": "acpitz\n"}, 0, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NewLinuxSensors(mapFS(tc.files)).Temperature()
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("Temperature() = %v, %v; want %v, error %v", got, err, tc.want, tc.wantErr)
			}
			if errors.Is(err, ErrNotSupported) != tc.unsupported {
				t.Errorf("Temperature() error %v: errors.Is(ErrNotSupported) = %v, want %v", err, !tc.unsupported, tc.unsupported)
			}
		})
	}
}

func TestMissingProcFiles(t *testing.T) {
	s := NewLinuxSensors(fstest.MapFS{})
	if _, err := s.Load(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load() error = %v, want fs.ErrNotExist", err)
	}
	if _, err := s.Uptime(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Uptime() error = %v, want fs.ErrNotExist", err)
	}
}
