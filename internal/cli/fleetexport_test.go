package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestFleetExportArgs: bad flags are refused before anything is sent.
func TestFleetExportArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--url", "https://up.example/s"}, "want 1 argument"},
		{[]string{"op-x", "--url", "https://up.example/s"}, "--camera and --url"},
		{[]string{"op-x", "--camera", "door", "--url", "http://up.example/s", "--snapshot"}, "only https"},
		{[]string{"op-x", "--camera", "door", "--url", "https://up.example/s", "--start", "yesterday"}, "--start"},
		{[]string{"op-x", "--camera", "door", "--url", "https://up.example/s", "--start", "2026-11-22T10:00:00Z", "--duration", "1500ms"}, "whole seconds"},
		{[]string{"op-x", "--camera", "door", "--url", "https://up.example/s", "--start", "2026-11-22T10:00:00Z", "--duration", "2h"}, "whole seconds"},
	} {
		var out bytes.Buffer
		code := Main(context.Background(), append([]string{"fleet", "export", "--dir", t.TempDir()}, tc.args...), &out, &out)
		if code != 2 || !strings.Contains(out.String(), tc.want) {
			t.Errorf("%v: exit %d, %s; want usage error with %q", tc.args, code, out.String(), tc.want)
		}
	}
}
