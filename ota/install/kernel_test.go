package install

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCheckKernelModules(t *testing.T) {
	for _, tc := range []struct {
		name string
		dirs []string // under lib/modules; nil: no lib/modules at all
		ok   bool
	}{
		{"no modules shipped", nil, true},
		{"empty", []string{}, true},
		{"the running kernel's", []string{"7.1.3"}, true},
		{"the running kernel's among others", []string{"7.0.9", "7.1.3"}, true},
		{"another kernel's", []string{"7.2.0"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "lib", "modules")
			if tc.dirs != nil {
				os.MkdirAll(dir, 0o755)
				os.WriteFile(filepath.Join(dir, "README"), nil, 0o644)
			}
			for _, d := range tc.dirs {
				os.MkdirAll(filepath.Join(dir, d, "kernel"), 0o755)
			}
			err := CheckKernelModules(dir, "7.1.3")
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok %v", err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "7.2.0") {
				t.Errorf("the reason does not name the release's kernel: %v", err)
			}
		})
	}
}

type checkingFake struct {
	*Fake
	err error
}

func (c checkingFake) CheckTrial() error { return c.err }

// TestTrialCheckFails: a trial whose release does not fit the box (modules
// for another kernel) fails at once, without waiting for the health gate.
func TestTrialCheckFails(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if err := r.in.Offer(ctx, r.keys, r.manifest(t, 2, r.image)); err != nil {
		t.Fatal(err)
	}
	r.fake.Boot()
	r.reopen(t)
	r.in.Target = checkingFake{r.fake, errors.New("modules for 7.2.0, kernel 7.1.3")}
	r.in.Health = func(context.Context) error { t.Error("health gate run"); return nil }
	if err := r.in.Resume(ctx); err == nil {
		t.Fatal("committed")
	}
	st, _ := r.in.Load()
	if st.Phase != RolledBack || st.Floor != 0 || !strings.Contains(st.Reason, "7.2.0") {
		t.Fatalf("state %+v", st)
	}
	if slices.Contains(r.fake.Calls, "switch") || r.fake.Calls[len(r.fake.Calls)-1] != "reboot" {
		t.Fatalf("calls %v", r.fake.Calls)
	}
}
