package install

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestModuleTrees(t *testing.T) {
	for _, tc := range []struct {
		name string
		dirs []string // under lib/modules; nil: no lib/modules at all
		want []string
	}{
		{"no modules shipped", nil, []string{}},
		{"empty", []string{}, []string{}},
		{"one", []string{"7.1.3"}, []string{"7.1.3"}},
		{"sorted", []string{"7.1.3", "7.0.9"}, []string{"7.0.9", "7.1.3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "lib", "modules")
			if tc.dirs != nil {
				os.MkdirAll(dir, 0o755)
				os.WriteFile(filepath.Join(dir, "README"), nil, 0o644) // not a tree
			}
			for _, d := range tc.dirs {
				os.MkdirAll(filepath.Join(dir, d, "kernel"), 0o755)
			}
			got, err := ModuleTrees(dir)
			if err != nil || !slices.Equal(got, tc.want) || got == nil {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// moduleFake is a Fake whose running root ships the module trees in mods.
type moduleFake struct {
	*Fake
	mods *[]string
}

func (m moduleFake) KernelModules() ([]string, error) { return slices.Clone(*m.mods), nil }

// TestKernelModulesKept: a trial root with other kernel modules than the
// root it replaces fails at once, without waiting for the health gate; the
// same modules go on to the gate.
func TestKernelModulesKept(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after []string
		ok            bool
	}{
		{"same kernel", []string{"7.1.3"}, []string{"7.1.3"}, true},
		{"no modules either side", []string{}, []string{}, true},
		{"another kernel", []string{"7.1.3"}, []string{"7.2.0"}, false},
		{"modules added", []string{}, []string{"7.2.0"}, false},
		{"modules gone", []string{"7.1.3"}, []string{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			mods := slices.Clone(tc.before)
			r.in.Target = moduleFake{r.fake, &mods}
			ctx := context.Background()
			if err := r.in.Offer(ctx, r.keys, r.manifest(t, 2, r.image)); err != nil {
				t.Fatal(err)
			}
			r.fake.Boot()
			r.reopen(t) // the state goes through the store
			mods = slices.Clone(tc.after)
			r.in.Target = moduleFake{r.fake, &mods}
			gated := false
			r.in.Health = func(context.Context) error { gated = true; return nil }
			err := r.in.Resume(ctx)
			st, _ := r.in.Load()
			if tc.ok {
				if err != nil || st.Phase != Committed || !gated {
					t.Fatalf("err %v, state %+v, gate run %v", err, st, gated)
				}
				return
			}
			if err == nil || st.Phase != RolledBack || st.Floor != 0 || gated || !strings.Contains(st.Reason, "kernel modules") {
				t.Fatalf("err %v, state %+v, gate run %v", err, st, gated)
			}
			if slices.Contains(r.fake.Calls, "switch") || r.fake.Calls[len(r.fake.Calls)-1] != "reboot" {
				t.Fatalf("calls %v", r.fake.Calls)
			}
		})
	}
}
