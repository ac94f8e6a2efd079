// Package tools lets a test depend on a real program (ffmpeg, mosquitto,
// qemu, chromium…): where one is missing the test is skipped, except in CI
// (env CI set), where .ci/run installs them all and a missing one fails.
package tools

import (
	"os"
	"os/exec"
	"testing"
)

// Need skips t (fails it when CI is set) unless every named program is on
// PATH.
func Need(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is required in CI (.ci/run installs it): %v", n, err)
			}
			t.Skipf("%s not installed: %v", n, err)
		}
	}
}
