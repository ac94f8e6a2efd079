// Package buildinfo carries the firmware version, stamped at image build time
// with -ldflags "-X github.com/outpost-gw/outpost/internal/buildinfo.Version=…".
package buildinfo

// Version of this build; "dev" when not stamped.
var Version = "dev"

// LDFlag returns the linker flag that stamps version into a build.
func LDFlag(version string) string {
	return "-X github.com/outpost-gw/outpost/internal/buildinfo.Version=" + version
}
