// Package buildinfo carries the firmware version and build time, stamped at
// image build time with -ldflags (see LDFlag).
package buildinfo

import (
	"runtime/debug"
	"strconv"
	"time"
)

// Version of this build; "dev" when not stamped.
var Version = "dev"

// buildUnix is the build time in Unix seconds; empty when not stamped.
var buildUnix string

// LDFlag returns the linker flags that stamp version and the current time
// into a build.
func LDFlag(version string) string {
	return "-X github.com/outpost-gw/outpost/internal/buildinfo.Version=" + version +
		" -X github.com/outpost-gw/outpost/internal/buildinfo.buildUnix=" + strconv.FormatInt(time.Now().Unix(), 10)
}

// BuildTime is when this build was made: the stamped time, else the VCS
// commit time Go records (vcs.time), else zero. The trusted clock never
// goes below it (internal/trustclock).
func BuildTime() time.Time {
	if n, err := strconv.ParseInt(buildUnix, 10, 64); err == nil && n > 0 {
		return time.Unix(n, 0).UTC()
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" {
				if t, err := time.Parse(time.RFC3339, s.Value); err == nil {
					return t.UTC()
				}
			}
		}
	}
	return time.Time{}
}
