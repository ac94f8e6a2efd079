// Package rollout runs a staged update of a set of boxes: a canary set
// first, then the rest in waves. Each box is offered the release and its
// reported outcome awaited (committed, rolled back, refused, or nothing
// within the timeout, which counts as a failure). Any failure in the canary
// stage halts the rollout before the rest is offered; in later stages it
// halts as soon as the failures so far pass MaxFailures. Boxes already
// offered keep their own outcome: a halt stops new offers, it does not
// undo anything (a failed box has rolled itself back).
package rollout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// Fleet is what a rollout needs from the fleet's link.
type Fleet interface {
	// Offer sends device the release; an error means the box refused it
	// at once or could not be reached.
	Offer(ctx context.Context, device string) error
	// Outcome blocks until device reports its final outcome of the
	// release offered, or ctx ends (then it returns ctx's error).
	Outcome(ctx context.Context, device string) (Result, error)
}

// Result is a box's final outcome.
type Result struct {
	Phase  string // "committed" is success; "rolled_back", "refused", …
	Reason string
}

// OK reports success.
func (r Result) OK() bool { return r.Phase == PhaseCommitted }

// Phases of a Result that are not the box's own.
const (
	PhaseCommitted   = "committed"
	PhaseTimeout     = "timeout"
	PhaseOfferFailed = "offer_failed"
)

// Plan says who gets the release and when to stop.
type Plan struct {
	Canary []string // offered first; any failure halts
	Rest   []string // offered after a clean canary stage, Wave at a time
	// Wave is how many of Rest are offered at once (default 10).
	Wave int
	// MaxFailures is how many failures (canary included) are tolerated;
	// one more halts the rollout.
	MaxFailures int
	// Timeout bounds how long one box has from offer to outcome
	// (download, trial boot, health gate): default 20 min.
	Timeout time.Duration
}

// Report is what happened.
type Report struct {
	Results map[string]Result
	// NotOffered lists the boxes a halt kept the release from.
	NotOffered []string
	Halted     bool
	Why        string
}

// Failures counts the failed boxes.
func (r Report) Failures() int {
	n := 0
	for _, res := range r.Results {
		if !res.OK() {
			n++
		}
	}
	return n
}

// ErrHalted is returned (wrapped, with the reason) when a rollout stopped
// before offering every box.
var ErrHalted = errors.New("rollout halted")

// Run carries out p over f, printing one line per event to w.
func Run(ctx context.Context, f Fleet, p Plan, w io.Writer) (Report, error) {
	if w == nil {
		w = io.Discard
	}
	if p.Wave <= 0 {
		p.Wave = 10
	}
	if p.Timeout <= 0 {
		p.Timeout = 20 * time.Minute
	}
	if p.MaxFailures < 0 {
		p.MaxFailures = 0
	}
	rep := Report{Results: map[string]Result{}}
	if len(p.Canary)+len(p.Rest) == 0 {
		return rep, errors.New("rollout: no boxes to update")
	}
	if dup := duplicate(append(slices.Clone(p.Canary), p.Rest...)); dup != "" {
		return rep, fmt.Errorf("rollout: %s is listed twice", dup)
	}
	halt := func(from int, stages [][]string, why string) (Report, error) {
		rep.Halted, rep.Why = true, why
		for _, s := range stages[from:] {
			rep.NotOffered = append(rep.NotOffered, s...)
		}
		fmt.Fprintf(w, "HALTED: %s; not offered: %s\n", why, listOrNone(rep.NotOffered))
		return rep, fmt.Errorf("%w: %s", ErrHalted, why)
	}
	var stages [][]string
	if len(p.Canary) > 0 {
		stages = append(stages, p.Canary)
	}
	for rest := p.Rest; len(rest) > 0; {
		n := min(p.Wave, len(rest))
		stages = append(stages, rest[:n])
		rest = rest[n:]
	}
	for i, stage := range stages {
		if err := ctx.Err(); err != nil {
			return halt(i, stages, "interrupted: "+err.Error())
		}
		canary := i == 0 && len(p.Canary) > 0
		name := fmt.Sprintf("wave %d/%d", i+1, len(stages))
		if canary {
			name = "canary"
		}
		fmt.Fprintf(w, "%s: offering to %s\n", name, strings.Join(stage, ", "))
		res := runStage(ctx, f, stage, p.Timeout)
		var failed []string
		for _, dev := range stage {
			r := res[dev]
			rep.Results[dev] = r
			line := fmt.Sprintf("  %s: %s", dev, r.Phase)
			if r.Reason != "" {
				line += " (" + r.Reason + ")"
			}
			fmt.Fprintln(w, line)
			if !r.OK() {
				failed = append(failed, dev)
			}
		}
		total := rep.Failures()
		switch {
		case canary && len(failed) > 0:
			return halt(i+1, stages, fmt.Sprintf("canary failed on %s", strings.Join(failed, ", ")))
		case total > p.MaxFailures:
			return halt(i+1, stages, fmt.Sprintf("%d failures (%s), more than --max-failures %d", total, strings.Join(failedBoxes(rep), ", "), p.MaxFailures))
		}
	}
	fmt.Fprintf(w, "done: %d of %d boxes committed, %d failed\n", len(rep.Results)-rep.Failures(), len(rep.Results), rep.Failures())
	return rep, nil
}

// runStage offers to every box of a stage at once and collects outcomes;
// each box has timeout from its offer.
func runStage(ctx context.Context, f Fleet, devs []string, timeout time.Duration) map[string]Result {
	var mu sync.Mutex
	out := map[string]Result{}
	var wg sync.WaitGroup
	for _, dev := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := one(ctx, f, dev, timeout)
			mu.Lock()
			out[dev] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func one(ctx context.Context, f Fleet, dev string, timeout time.Duration) Result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := f.Offer(ctx, dev); err != nil {
		return Result{Phase: PhaseOfferFailed, Reason: err.Error()}
	}
	r, err := f.Outcome(ctx, dev)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return Result{Phase: PhaseTimeout, Reason: fmt.Sprintf("no outcome within %v", timeout)}
		}
		return Result{Phase: PhaseTimeout, Reason: err.Error()}
	}
	return r
}

func failedBoxes(r Report) []string {
	var out []string
	for dev, res := range r.Results {
		if !res.OK() {
			out = append(out, dev)
		}
	}
	slices.Sort(out)
	return out
}

func duplicate(devs []string) string {
	seen := map[string]bool{}
	for _, d := range devs {
		if seen[d] {
			return d
		}
		seen[d] = true
	}
	return ""
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}
