package rollout

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFleet answers from a table: each box's outcome phase, "" = never
// answers (a box that hangs), "offer" = the offer fails.
type fakeFleet struct {
	outcome map[string]string
	mu      sync.Mutex
	offered []string
}

func (f *fakeFleet) Offer(ctx context.Context, dev string) error {
	f.mu.Lock()
	f.offered = append(f.offered, dev)
	f.mu.Unlock()
	if f.outcome[dev] == "offer" {
		return errors.New("box offline")
	}
	return nil
}

func (f *fakeFleet) Outcome(ctx context.Context, dev string) (Result, error) {
	p := f.outcome[dev]
	if p == "" {
		<-ctx.Done()
		return Result{}, ctx.Err()
	}
	return Result{Phase: p, Reason: map[bool]string{true: "", false: "health gate: recorder wrote no part"}[p == PhaseCommitted]}, nil
}

func TestRun(t *testing.T) {
	const ok, rb = PhaseCommitted, "rolled_back"
	for _, tc := range []struct {
		name       string
		outcome    map[string]string
		plan       Plan
		halted     bool
		offered    []string // in any order
		notOffered []string
		why        string
	}{
		{
			name:    "all succeed",
			outcome: map[string]string{"c1": ok, "a": ok, "b": ok, "c": ok},
			plan:    Plan{Canary: []string{"c1"}, Rest: []string{"a", "b", "c"}, Wave: 2},
			offered: []string{"c1", "a", "b", "c"},
		},
		{
			name:       "canary fails: halt before the rest",
			outcome:    map[string]string{"c1": ok, "c2": rb, "a": ok, "b": ok},
			plan:       Plan{Canary: []string{"c1", "c2"}, Rest: []string{"a", "b"}, MaxFailures: 5},
			halted:     true,
			offered:    []string{"c1", "c2"},
			notOffered: []string{"a", "b"},
			why:        "canary failed on c2",
		},
		{
			name:       "failures above threshold in a later wave: halt",
			outcome:    map[string]string{"c1": ok, "a": rb, "b": ok, "c": "refused", "d": ok, "e": ok},
			plan:       Plan{Canary: []string{"c1"}, Rest: []string{"a", "b", "c", "d", "e"}, Wave: 1, MaxFailures: 1},
			halted:     true,
			offered:    []string{"c1", "a", "b", "c"},
			notOffered: []string{"d", "e"},
			why:        "2 failures (a, c), more than --max-failures 1",
		},
		{
			name:    "failures within threshold: carries on",
			outcome: map[string]string{"a": rb, "b": ok, "c": ok},
			plan:    Plan{Rest: []string{"a", "b", "c"}, Wave: 1, MaxFailures: 1},
			offered: []string{"a", "b", "c"},
		},
		{
			name:       "timeouts count as failures",
			outcome:    map[string]string{"c1": ok, "a": "", "b": ok, "c": ok},
			plan:       Plan{Canary: []string{"c1"}, Rest: []string{"a", "b", "c"}, Wave: 2, Timeout: 50 * time.Millisecond},
			halted:     true,
			offered:    []string{"c1", "a", "b"},
			notOffered: []string{"c"},
			why:        "1 failures (a), more than --max-failures 0",
		},
		{
			name:       "a canary that times out halts",
			outcome:    map[string]string{"c1": "", "a": ok},
			plan:       Plan{Canary: []string{"c1"}, Rest: []string{"a"}, Timeout: 50 * time.Millisecond, MaxFailures: 3},
			halted:     true,
			offered:    []string{"c1"},
			notOffered: []string{"a"},
			why:        "canary failed on c1",
		},
		{
			name:       "an offer that fails is a failure",
			outcome:    map[string]string{"c1": "offer", "a": ok},
			plan:       Plan{Canary: []string{"c1"}, Rest: []string{"a"}},
			halted:     true,
			offered:    []string{"c1"},
			notOffered: []string{"a"},
			why:        "canary failed on c1",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeFleet{outcome: tc.outcome}
			var out bytes.Buffer
			rep, err := Run(context.Background(), f, tc.plan, &out)
			if tc.halted != errors.Is(err, ErrHalted) || rep.Halted != tc.halted {
				t.Fatalf("err %v, halted %v; want halted %v\n%s", err, rep.Halted, tc.halted, out.String())
			}
			if !tc.halted && err != nil {
				t.Fatal(err)
			}
			got := slices.Clone(f.offered)
			slices.Sort(got)
			want := slices.Clone(tc.offered)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("offered %v, want %v", got, want)
			}
			if !slices.Equal(rep.NotOffered, tc.notOffered) {
				t.Errorf("not offered %v, want %v", rep.NotOffered, tc.notOffered)
			}
			if rep.Why != tc.why || tc.why != "" && !strings.Contains(out.String(), "HALTED: "+tc.why) {
				t.Errorf("why %q, want %q; output:\n%s", rep.Why, tc.why, out.String())
			}
			// The canary stage finishes before anything else is offered.
			if n := len(tc.plan.Canary); n > 0 {
				first := slices.Clone(f.offered[:n])
				slices.Sort(first)
				c := slices.Clone(tc.plan.Canary)
				slices.Sort(c)
				if !slices.Equal(first, c) {
					t.Errorf("offer order %v: canary first", f.offered)
				}
			}
		})
	}
}

func TestRunRefusesBadPlans(t *testing.T) {
	for _, p := range []Plan{{}, {Canary: []string{"a"}, Rest: []string{"a"}}} {
		if _, err := Run(context.Background(), &fakeFleet{}, p, nil); err == nil || errors.Is(err, ErrHalted) {
			t.Errorf("plan %+v: %v", p, err)
		}
	}
}
