// Package hardwaretest provides fakes for the interfaces of package
// hardware: a manually advanced clock, scriptable sensors and a watchdog
// that counts what was done to it.
package hardwaretest

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/outpost-gw/outpost/hardware"
)

// FakeClock is a hardware.Clock whose time only moves on Advance. Its
// tickers, like real ones, have a one-slot buffer and drop ticks nobody
// has received yet. The zero value starts at the zero time.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	tickers []*fakeTicker
}

var _ hardware.Clock = (*FakeClock)(nil)

// NewFakeClock returns a FakeClock reading start.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{now: start} }

// Now returns the fake time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTicker returns a ticker firing every d of fake time. It panics if
// d <= 0, like time.NewTicker.
func (c *FakeClock) NewTicker(d time.Duration) hardware.Ticker {
	if d <= 0 {
		panic("hardwaretest: non-positive interval for NewTicker")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTicker{clock: c, d: d, next: c.now.Add(d), ch: make(chan time.Time, 1)}
	c.tickers = append(c.tickers, t)
	return t
}

// Advance moves the clock forward by d and fires, without blocking, every
// ticker whose deadline has been reached.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.tickers {
		if t.next.After(c.now) {
			continue
		}
		select {
		case t.ch <- t.next:
		default:
		}
		missed := c.now.Sub(t.next) / t.d
		t.next = t.next.Add((missed + 1) * t.d)
	}
}

// Tickers reports how many tickers are active, so a test can wait for
// the code under test to have started its ticker before advancing.
func (c *FakeClock) Tickers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.tickers)
}

type fakeTicker struct {
	clock *FakeClock
	d     time.Duration
	next  time.Time
	ch    chan time.Time
}

func (t *fakeTicker) C() <-chan time.Time { return t.ch }

func (t *fakeTicker) Stop() {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.tickers {
		if x == t {
			c.tickers = append(c.tickers[:i], c.tickers[i+1:]...)
			return
		}
	}
}

// Sensors is a hardware.Sensors whose methods call the corresponding
// function fields. A nil field makes the method fail with an error
// wrapping hardware.ErrNotSupported, like a machine lacking that sensor.
type Sensors struct {
	TemperatureFunc func() (float64, error)
	MemoryFunc      func() (hardware.MemInfo, error)
	DiskFunc        func(path string) (hardware.DiskUsage, error)
	LoadFunc        func() (hardware.LoadAvg, error)
	UptimeFunc      func() (time.Duration, error)
}

var _ hardware.Sensors = (*Sensors)(nil)

func unsupported(field string) error {
	return fmt.Errorf("%w: hardwaretest.Sensors.%s not set", hardware.ErrNotSupported, field)
}

// Temperature calls TemperatureFunc.
func (s *Sensors) Temperature() (float64, error) {
	if s.TemperatureFunc == nil {
		return 0, unsupported("TemperatureFunc")
	}
	return s.TemperatureFunc()
}

// Memory calls MemoryFunc.
func (s *Sensors) Memory() (hardware.MemInfo, error) {
	if s.MemoryFunc == nil {
		return hardware.MemInfo{}, unsupported("MemoryFunc")
	}
	return s.MemoryFunc()
}

// Disk calls DiskFunc.
func (s *Sensors) Disk(path string) (hardware.DiskUsage, error) {
	if s.DiskFunc == nil {
		return hardware.DiskUsage{}, unsupported("DiskFunc")
	}
	return s.DiskFunc(path)
}

// Load calls LoadFunc.
func (s *Sensors) Load() (hardware.LoadAvg, error) {
	if s.LoadFunc == nil {
		return hardware.LoadAvg{}, unsupported("LoadFunc")
	}
	return s.LoadFunc()
}

// Uptime calls UptimeFunc.
func (s *Sensors) Uptime() (time.Duration, error) {
	if s.UptimeFunc == nil {
		return 0, unsupported("UptimeFunc")
	}
	return s.UptimeFunc()
}

// ErrClosed is returned by Watchdog.Ping after Close.
var ErrClosed = errors.New("hardwaretest: watchdog closed")

// Watchdog is a hardware.Watchdog that counts pings and closes; every Close
// counts as a magic close. It is safe for concurrent use.
type Watchdog struct {
	mu      sync.Mutex
	pings   int
	closes  int
	pingErr error
}

var _ hardware.Watchdog = (*Watchdog)(nil)

// Ping counts a successful ping, or returns the error set by SetPingError
// (not counted), or ErrClosed after Close.
func (w *Watchdog) Ping() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closes > 0:
		return ErrClosed
	case w.pingErr != nil:
		return w.pingErr
	}
	w.pings++
	return nil
}

// Close counts a (magic) close.
func (w *Watchdog) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closes++
	return nil
}

// SetPingError makes subsequent pings fail with err (nil restores success).
func (w *Watchdog) SetPingError(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pingErr = err
}

// Pings reports how many pings succeeded.
func (w *Watchdog) Pings() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pings
}

// Closes reports how many times Close was called.
func (w *Watchdog) Closes() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closes
}
