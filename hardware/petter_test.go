package hardware_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/hardware"
	"github.com/outpost-gw/outpost/hardware/hardwaretest"
)

// syncBuffer collects log output written from the Run goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogger() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})), &b
}

func start(p *hardware.Petter) (cancel func() error) {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() error { stop(); return <-done }
}

func receive(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for Check to be called")
	}
}

// step is one tick of the Petter: the first step is the immediate check on
// start, each later one follows an Advance of one interval.
type step struct {
	checkFails, pingFails bool
}

func TestPetter(t *testing.T) {
	ok, fail, pingFail := step{}, step{checkFails: true}, step{pingFails: true}
	for _, tc := range []struct {
		name          string
		steps         []step
		wantWarn      []string // messages, in order
		wantInfo      []string
		wantInfoAttrs string
	}{
		{name: "healthy", steps: []step{ok, ok, ok},
			wantInfo: []string{"hardware watchdog disarmed"}},
		{name: "fails then recovers", steps: []step{ok, fail, fail, fail, ok, ok},
			wantWarn:      []string{"health check failing; withholding watchdog pets"},
			wantInfo:      []string{"health check recovered; petting watchdog again", "hardware watchdog disarmed"},
			wantInfoAttrs: "failed_for=3s"},
		{name: "failing from the start", steps: []step{fail, fail},
			wantWarn: []string{"health check failing; withholding watchdog pets"},
			wantInfo: []string{"hardware watchdog disarmed"}},
		{name: "flapping", steps: []step{ok, fail, ok, fail, ok},
			wantWarn: []string{"health check failing; withholding watchdog pets", "health check failing; withholding watchdog pets"},
			wantInfo: []string{"health check recovered; petting watchdog again", "health check recovered; petting watchdog again", "hardware watchdog disarmed"}},
		{name: "ping errors", steps: []step{ok, pingFail, pingFail, ok},
			wantWarn: []string{"watchdog ping failed"},
			wantInfo: []string{"watchdog ping succeeded again", "hardware watchdog disarmed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const interval = time.Second
			clock := &hardwaretest.FakeClock{} // the zero time must not confuse Run
			wd := &hardwaretest.Watchdog{}
			log, logs := newLogger()
			// Check announces itself, then blocks until the test hands it
			// the step's result, so the test can inspect the outcome of the
			// previous step while Run is parked.
			checked := make(chan struct{})
			results := make(chan error)
			p := &hardware.Petter{
				Watchdog: wd,
				Interval: interval,
				Log:      log,
				Clock:    clock,
				Check: func() error {
					checked <- struct{}{}
					return <-results
				},
			}
			if got := p.State(); got != hardware.WatchdogStopped {
				t.Errorf("State() before Run = %q, want %q", got, hardware.WatchdogStopped)
			}
			var wantPings int
			var wantState hardware.WatchdogState
			verify := func(when string) {
				t.Helper()
				if got := wd.Pings(); got != wantPings {
					t.Errorf("%s: %d pings, want %d", when, got, wantPings)
				}
				if got := p.State(); got != wantState {
					t.Errorf("%s: State() = %q, want %q", when, got, wantState)
				}
			}
			var cancel func() error
			for i, s := range tc.steps {
				if i == 0 {
					cancel = start(p)
				} else {
					clock.Advance(interval)
				}
				receive(t, checked)
				if i > 0 {
					verify(fmt.Sprintf("after step %d", i-1))
				}
				var err error
				if s.checkFails {
					err = errors.New("mqtt broker unreachable")
				}
				if s.pingFails {
					wd.SetPingError(errors.New("EIO"))
				} else {
					wd.SetPingError(nil)
				}
				results <- err
				switch {
				case s.checkFails:
					wantState = hardware.WatchdogWithheld
				case s.pingFails:
					wantState = hardware.WatchdogPingFailed
				default:
					wantState = hardware.WatchdogPetting
					wantPings++
				}
			}
			if err := cancel(); err != nil {
				t.Fatalf("Run() = %v, want nil", err)
			}
			wantState = hardware.WatchdogStopped
			verify("after Run")
			if got := wd.Closes(); got != 1 {
				t.Errorf("watchdog closed %d times, want exactly one magic close", got)
			}
			out := logs.String()
			if got := messages(out, "WARN"); !equal(got, tc.wantWarn) {
				t.Errorf("warnings = %q, want %q\nlog:\n%s", got, tc.wantWarn, out)
			}
			if got := messages(out, "INFO"); !equal(got, tc.wantInfo) {
				t.Errorf("info = %q, want %q\nlog:\n%s", got, tc.wantInfo, out)
			}
			if !strings.Contains(out, tc.wantInfoAttrs) {
				t.Errorf("log lacks %q:\n%s", tc.wantInfoAttrs, out)
			}
		})
	}
}

func TestPetterAbsentWatchdog(t *testing.T) {
	log, logs := newLogger()
	p := &hardware.Petter{Log: log, Clock: hardwaretest.NewFakeClock(time.Time{})}
	cancel := start(p)
	deadline := time.Now().Add(10 * time.Second)
	for p.State() != hardware.WatchdogAbsent {
		if time.Now().After(deadline) {
			t.Fatalf("State() = %q, want %q", p.State(), hardware.WatchdogAbsent)
		}
		time.Sleep(time.Millisecond)
	}
	if err := cancel(); err != nil {
		t.Fatalf("Run() = %v, want nil: an absent watchdog is not a failure", err)
	}
	if got, want := messages(logs.String(), "INFO"), []string{"no hardware watchdog; not petting"}; !equal(got, want) {
		t.Errorf("log = %q, want %q", got, want)
	}
}

// messages returns the msg of every logged line at level.
func messages(log, level string) []string {
	var out []string
	for line := range strings.Lines(log) {
		if !strings.HasPrefix(line, "level="+level+" ") {
			continue
		}
		_, msg, _ := strings.Cut(line, "msg=")
		if strings.HasPrefix(msg, `"`) {
			msg, _, _ = strings.Cut(msg[1:], `"`)
		} else {
			msg, _, _ = strings.Cut(msg, " ")
		}
		out = append(out, strings.TrimSpace(msg))
	}
	return out
}

func equal(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }
