package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestFleetHoldArgs: what the box would refuse is refused before anything
// is sent.
func TestFleetHoldArgs(t *testing.T) {
	rng := []string{"--camera", "door", "--start", "2026-11-22T10:00:00Z", "--end", "2026-11-22T11:00:00Z"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--camera", "door"}, "want 1 argument"},
		{[]string{"op-x", "--camera", "door"}, "--camera, --start and --end"},
		{append([]string{"op-x", "--end", "2026-11-22T09:00:00Z"}, rng[:4]...), "end must be after start"},
		{append([]string{"op-x", "--until", "2020-01-01T00:00:00Z"}, rng...), "until must be in the future"},
		{append([]string{"op-x", "--for", "9000h"}, rng...), "until must be in the future"},
		{append([]string{"op-x", "--id", "a b"}, rng...), "id"},
		{append(append([]string{"op-x"}, rng...), "--start", "yesterday"), "start"},
		{[]string{"op-x", "--release", "../x"}, "id"},
	} {
		var out bytes.Buffer
		code := Main(context.Background(), append([]string{"fleet", "hold", "--dir", t.TempDir()}, tc.args...), &out, &out)
		if code != 2 || !strings.Contains(out.String(), tc.want) {
			t.Errorf("%v: exit %d, %s; want usage error with %q", tc.args, code, out.String(), tc.want)
		}
	}
}
