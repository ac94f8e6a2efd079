package image

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-gw/outpost/internal/config"
	"golang.org/x/mod/modfile"
)

func strs(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// TestInstanceConfigs checks each committed config.json: architecture,
// kernel and firmware for the target, no TCP listener for gokrazy's web
// interface, and nothing that calls out to public hosts.
func TestInstanceConfigs(t *testing.T) {
	for _, tc := range []struct {
		target, goarch, kernel, firmware, eeprom string
	}{
		{"amd64", "amd64", "github.com/gokrazy/kernel.amd64", "", ""},
		{"rpi", "arm64", "github.com/gokrazy/kernel.rpi", "github.com/gokrazy/firmware", "github.com/gokrazy/rpi-eeprom"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			c, err := LoadInstanceConfig(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if env := strs(c["Environment"]); !slices.Contains(env, "GOARCH="+tc.goarch) || !slices.Contains(env, "GOOS=linux") {
				t.Errorf("Environment = %v", env)
			}
			if c["KernelPackage"] != tc.kernel || c["FirmwarePackage"] != tc.firmware || c["EEPROMPackage"] != tc.eeprom {
				t.Errorf("kernel/firmware/eeprom = %v/%v/%v", c["KernelPackage"], c["FirmwarePackage"], c["EEPROMPackage"])
			}
			if u, _ := c["Update"].(map[string]any); u["NoPassword"] != true || u["HTTPPassword"] != nil {
				t.Errorf("Update = %v, want NoPassword and no password", u)
			}
			if pkgs := strs(c["Packages"]); !slices.Equal(pkgs, []string{DaemonPackage}) {
				t.Errorf("Packages = %v", pkgs)
			}
			sys := strs(c["GokrazyPackages"])
			for _, p := range sys {
				if strings.HasSuffix(p, "/heartbeat") || strings.HasSuffix(p, "/ntp") {
					t.Errorf("GokrazyPackages has %s, which reaches public hosts", p)
				}
			}
			flags := strs(pkgConfig(c, DaemonPackage)["CommandLineFlags"])
			if !slices.Contains(flags, "-data=/perm/outpost") || !slices.Contains(flags, "-fleet="+FleetPathInImage) {
				t.Errorf("outpostd flags = %v", flags)
			}
		})
	}
	if _, err := LoadInstanceConfig("sparc"); err == nil {
		t.Error("unknown target accepted")
	}
}

func TestApplyFleetAndVersion(t *testing.T) {
	c, _ := LoadInstanceConfig("amd64")
	f := config.Fleet{Name: "acme", BrokerURL: "mqtts://b:8883", NTPServers: []string{"ntp1.acme.example", "10.0.0.1:123"}}
	applyFleet(c, f, []byte(`{"name":"acme"}`))
	stampVersion(c, "v1.2.3", "-X a.b=c")
	pc := pkgConfig(c, DaemonPackage)
	if files, _ := pc["ExtraFileContents"].(map[string]any); !strings.Contains(files[FleetPathInImage].(string), "acme") {
		t.Errorf("fleet file not baked in: %v", pc)
	}
	if fl := strs(pc["GoBuildFlags"]); len(fl) != 1 || !strings.Contains(fl[0], "buildinfo.Version=v1.2.3 ") ||
		!strings.Contains(fl[0], "buildinfo.buildUnix=") || !strings.HasSuffix(fl[0], " -X a.b=c") {
		t.Errorf("GoBuildFlags = %v", fl)
	}
	const ntp = "github.com/gokrazy/gokrazy/cmd/ntp"
	if !slices.Contains(strs(c["GokrazyPackages"]), ntp) {
		t.Error("ntp not added with fleet NTP servers")
	}
	if got := strs(pkgConfig(c, ntp)["CommandLineFlags"]); !slices.Equal(got, f.NTPServers) {
		t.Errorf("ntp flags = %v, want exactly the fleet's servers", got)
	}
	// Without NTP servers, no NTP client at all.
	c2, _ := LoadInstanceConfig("amd64")
	applyFleet(c2, config.Fleet{Name: "x", BrokerURL: "mqtts://b"}, nil)
	if slices.Contains(strs(c2["GokrazyPackages"]), ntp) {
		t.Error("ntp added without fleet NTP servers")
	}
}

func TestWriteInstance(t *testing.T) {
	repo, err := FindRepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "outpost-amd64")
	c, _ := LoadInstanceConfig("amd64")
	if err := writeInstance(dir, c, repo); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "builddir", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("go.mod", b, nil)
	if err != nil {
		t.Fatal(err)
	}
	var replaced bool
	for _, r := range mf.Replace {
		replaced = replaced || r.Old.Path == Module && r.New.Path == repo
	}
	if !replaced {
		t.Errorf("builddir go.mod does not replace %s with the checkout:\n%s", Module, b)
	}
	// Every module pinned in our go.mod is pinned there too.
	root, _ := os.ReadFile(filepath.Join(repo, "go.mod"))
	rf, _ := modfile.Parse("go.mod", root, nil)
	want := map[string]string{}
	for _, r := range rf.Require {
		want[r.Mod.Path] = r.Mod.Version
	}
	for _, r := range mf.Require {
		if v, ok := want[r.Mod.Path]; ok && v != r.Mod.Version {
			t.Errorf("%s: %s in builddir, %s in go.mod", r.Mod.Path, r.Mod.Version, v)
		}
		delete(want, r.Mod.Path)
	}
	if len(want) > 0 {
		t.Errorf("builddir go.mod lacks %v", want)
	}
}

func TestBuildRefusesBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Target: "amd64", Out: "x.img", SizeBytes: 100 << 20},
		{Target: "amd64", Out: "x.img", Version: "v1 rm -rf"},
		{Target: "amd64"},
	} {
		if err := Build(t.Context(), o); err == nil {
			t.Errorf("Build(%+v) succeeded", o)
		}
	}
}

func TestStripLogPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"2026/11/22 04:49:18 Creating root file system": "Creating root file system",
		"plain line": "plain line",
		"":           "",
	} {
		if got := stripLogPrefix(in); got != want {
			t.Errorf("stripLogPrefix(%q) = %q", in, got)
		}
	}
}
