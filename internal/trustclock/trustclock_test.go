package trustclock

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/internal/store"
)

// box is a fake machine: a settable wall clock and a monotonic clock that
// only moves forward, across "reboots" that keep the store.
type box struct {
	st   *store.Store
	wall time.Time
	mono time.Duration
	// online: the cloud link is up (its TLS handshake vouches for the wall clock)
	online bool
}

func (b *box) clock(build time.Time) *Clock {
	return &Clock{Store: b.st, Build: build, System: func() time.Time { return b.wall }, Monotonic: func() time.Duration { return b.mono },
		Vouched: func() bool { return b.online }}
}

// run lets d pass on both clocks.
func (b *box) run(d time.Duration) { b.wall, b.mono = b.wall.Add(d), b.mono+d }

func day(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestNow(t *testing.T) {
	build := day("2026-11-01")
	epoch := time.Unix(0, 0).UTC()
	for _, tc := range []struct {
		name string
		// steps drive the box; the last clock's Now is checked.
		steps func(b *box) *Clock
		want  time.Time
	}{
		{"fresh box before NTP: build time", func(b *box) *Clock {
			b.wall = epoch
			return b.clock(build)
		}, build},
		{"fresh box before NTP, an hour up: build time plus an hour", func(b *box) *Clock {
			b.wall = epoch
			c := b.clock(build)
			c.Now()
			b.run(time.Hour)
			return c
		}, build.Add(time.Hour)},
		{"NTP synced: system clock", func(b *box) *Clock {
			b.wall = day("2027-03-01")
			return b.clock(build)
		}, day("2027-03-01")},
		{"clock set back while running", func(b *box) *Clock {
			b.wall, b.online = day("2027-03-01"), true
			c := b.clock(build)
			c.Persist()
			b.run(time.Hour)
			b.wall = day("2026-12-01")
			return c
		}, day("2027-03-01").Add(time.Hour)},
		{"clock set back across a reboot: stored floor", func(b *box) *Clock {
			b.wall, b.online = day("2027-03-01"), true
			b.clock(build).Persist()
			b.wall, b.mono = day("2026-12-01"), 0 // rebooted, RTC wrong
			return b.clock(build)
		}, day("2027-03-01")},
		{"reboot into 1970 after running: stored floor, then elapsed", func(b *box) *Clock {
			b.wall, b.online = day("2027-03-01"), true
			c := b.clock(build)
			c.Run(canceled(), time.Hour) // persists
			b.wall, b.mono = epoch, 5*time.Second
			c = b.clock(build)
			c.Now()
			b.run(10 * time.Minute)
			return c
		}, day("2027-03-01").Add(10 * time.Minute)},
		{"fleet time observed over the link raises the floor", func(b *box) *Clock {
			b.wall = epoch
			c := b.clock(build)
			c.Observe(day("2027-05-01"))
			b.run(time.Minute)
			return c
		}, day("2027-05-01").Add(time.Minute)},
		{"fleet time is kept across a reboot", func(b *box) *Clock {
			b.wall = epoch
			c := b.clock(build)
			c.Observe(day("2027-05-01"))
			c.Persist()
			b.mono = 0
			return b.clock(build)
		}, day("2027-05-01")},
		{"an older fleet time does not lower it", func(b *box) *Clock {
			b.wall = day("2027-03-01")
			c := b.clock(build)
			c.Observe(day("2026-12-01"))
			return c
		}, day("2027-03-01")},
		{"system clock far ahead counts while it runs ahead", func(b *box) *Clock {
			b.wall = day("2099-01-01")
			c := b.clock(build)
			c.Observe(day("2027-03-01"))
			return c
		}, day("2099-01-01")},
		{"but is not kept: spoofed NTP does not freeze the box for good", func(b *box) *Clock {
			b.wall = day("2099-01-01")
			c := b.clock(build)
			c.Observe(day("2027-03-01"))
			c.Persist()
			b.wall, b.mono = epoch, 0
			return b.clock(build)
		}, day("2027-03-01")},
		{"NTP months after the build, link not up yet: counts, not kept", func(b *box) *Clock {
			b.wall = day("2027-06-01")
			c := b.clock(build)
			c.Persist()
			b.wall, b.mono = epoch, 0
			return b.clock(build)
		}, build},
		{"system clock a day ahead of the fleet is kept", func(b *box) *Clock {
			b.wall = day("2027-03-02")
			c := b.clock(build)
			c.Observe(day("2027-03-01"))
			c.Persist()
			b.wall, b.mono = epoch, 0
			return b.clock(build)
		}, day("2027-03-02")},
		{"no source at all: zero (updates refused)", func(b *box) *Clock {
			b.wall = time.Time{}
			return &Clock{System: func() time.Time { return b.wall }, Monotonic: func() time.Duration { return b.mono }}
		}, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := store.Open(t.TempDir(), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			b := &box{st: st}
			if got := tc.steps(b).Now(); !got.Equal(tc.want) {
				t.Errorf("Now = %v, want %v", got, tc.want)
			}
		})
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestPersistNeverLowers(t *testing.T) {
	st, err := store.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := &box{st: st, wall: day("2027-03-01")}
	if err := b.clock(time.Time{}).Persist(); err != nil {
		t.Fatal(err)
	}
	b.wall, b.mono = day("2026-01-01"), 0
	if err := b.clock(time.Time{}).Persist(); err != nil {
		t.Fatal(err)
	}
	b.wall = time.Time{}
	if got := b.clock(time.Time{}).Now(); !got.Equal(day("2027-03-01")) {
		t.Errorf("Now = %v after a set-back clock persisted", got)
	}
}

// TestRunAfterStoreClosed: the owner closed the store as Run's context
// ended: no panic, nothing logged as a failure.
func TestRunAfterStoreClosed(t *testing.T) {
	st, err := store.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c := &Clock{Store: st, System: func() time.Time { return day("2027-03-01") }}
	if err := c.Persist(); err != nil {
		t.Fatal(err)
	}
	st.Close()
	var logged bytes.Buffer
	c.Log = slog.New(slog.NewTextHandler(&logged, nil))
	c.Run(canceled(), time.Hour)
	if strings.Contains(logged.String(), "ERROR") || strings.Count(logged.String(), "WARN") > 1 {
		t.Errorf("logged: %s", logged.String())
	}
}
