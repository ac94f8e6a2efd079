// Package trustclock is the box's trusted lower bound on the current time,
// the clock the OTA freeze defence checks expiries against.
//
// A box without a clock battery starts in 1970, and an attacker on the
// network can set the clock back (NTP is not authenticated). Now is the
// latest of:
//
//   - the build time of the running image (internal/buildinfo);
//   - the last trusted time kept in the store, plus the monotonic time
//     elapsed since it was loaded (Run advances the stored value every few
//     minutes and at shutdown);
//   - the fleet's time as received in messages over the mutually
//     authenticated cloud link (Observe), plus elapsed time;
//   - the system clock (NTP from the fleet's own servers once synced).
//
// Every source can only raise the result, so a clock set back has no effect.
// A clock running ahead refuses valid offers while it is wrong (denial, not
// compromise); it is kept in the store only within MaxLead of the other
// sources or while the cloud link's TLS handshake vouches for it (Vouched),
// so one spoofed NTP answer cannot freeze a box for good.
package trustclock

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/outpost-gw/outpost/internal/store"
)

// DefaultMaxLead is how far the system clock may run ahead of the other
// sources and still be persisted.
const DefaultMaxLead = 48 * time.Hour

type record struct {
	Floor time.Time `json:"floor"`
}

var bucket = store.NewBucket[record]("clock")

// Clock is the trusted clock. The zero value (with Store set) works; fields
// must not change after the first call.
type Clock struct {
	Store *store.Store // nil: nothing is kept across restarts
	// Build is the running image's build time (zero: unknown).
	Build time.Time
	// System is the wall clock (default time.Now).
	System func() time.Time
	// Monotonic is time elapsed since an arbitrary fixed point, never set
	// back (default: Go's monotonic clock).
	Monotonic func() time.Duration
	MaxLead   time.Duration // default DefaultMaxLead
	// Vouched reports whether the system clock was confirmed by a TLS
	// handshake with the fleet (the cloud link is online: the broker's
	// certificate is valid at that time, which bounds how far ahead the
	// clock can be). Such a clock is kept however far ahead of the floor
	// it is (a box that sat on a shelf for months since its build).
	Vouched func() bool
	Log     *slog.Logger

	mu     sync.Mutex
	loaded bool
	base   time.Time     // trusted floor (without the system clock) at anchor
	anchor time.Duration // Monotonic() when base was set
}

var start = time.Now()

func (c *Clock) sys() time.Time {
	if c.System != nil {
		return c.System()
	}
	return time.Now()
}

func (c *Clock) mono() time.Duration {
	if c.Monotonic != nil {
		return c.Monotonic()
	}
	return time.Since(start)
}

func (c *Clock) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

// floor is the trusted floor without the system clock; c.mu held.
func (c *Clock) floor() time.Time {
	if !c.loaded {
		c.loaded = true
		c.base, c.anchor = c.Build, c.mono()
		if c.Store != nil {
			var r record
			err := c.Store.View(func(tx *bolt.Tx) error {
				var err error
				r, err = bucket.Get(tx, "floor")
				return err
			})
			switch {
			case err == nil:
				c.base = later(c.base, r.Floor)
			case !errors.Is(err, store.ErrNotFound):
				c.log().Warn("trusted clock: reading the stored floor", "err", err)
			}
		}
	}
	if c.base.IsZero() {
		return time.Time{}
	}
	return c.base.Add(max(c.mono()-c.anchor, 0))
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Now is the trusted time: never earlier than any source. Zero only when
// no source knows the time (no build time, nothing stored, system clock
// zero), which the manifest check refuses.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return later(c.floor(), c.sys()).UTC()
}

// Observe takes a time the fleet sent over the authenticated link (an
// envelope's time); earlier times than the floor are ignored.
func (c *Clock) Observe(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.floor(); t.After(f) {
		c.base, c.anchor = t, c.mono()
	}
}

// Persist keeps the trusted time in the store: the floor, raised to the
// system clock when that is at most MaxLead ahead of it or Vouched.
func (c *Clock) Persist() error {
	if c.Store == nil {
		return nil
	}
	c.mu.Lock()
	f := c.floor()
	lead := c.MaxLead
	if lead <= 0 {
		lead = DefaultMaxLead
	}
	if s := c.sys(); s.After(f) && (f.IsZero() || s.Sub(f) <= lead || c.Vouched != nil && c.Vouched()) {
		f, c.base, c.anchor = s, s, c.mono()
	}
	c.mu.Unlock()
	if f.IsZero() {
		return nil
	}
	return c.Store.Update(func(tx *bolt.Tx) error {
		old, err := bucket.Get(tx, "floor")
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if !f.After(old.Floor) {
			return nil
		}
		return bucket.Put(tx, "floor", record{Floor: f.UTC()})
	})
}

// Run persists every interval (default 10 min) and once more when ctx ends
// (if the store is still open).
func (c *Clock) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 10 * time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := c.Persist(); err != nil {
			c.log().Warn("trusted clock: persisting", "err", err)
		}
		select {
		case <-ctx.Done():
			// The owner may close the store at the same time: then
			// the last interval's advance is lost, nothing else.
			if err := c.Persist(); err != nil && !errors.Is(err, berrors.ErrDatabaseNotOpen) {
				c.log().Warn("trusted clock: persisting", "err", err)
			}
			return
		case <-t.C:
		}
	}
}
