package hardwaretest

import (
	"errors"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/hardware"
)

func TestFakeClockTicker(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewFakeClock(start)
	tk := c.NewTicker(time.Second)
	expectTick := func(want time.Time) {
		t.Helper()
		select {
		case got := <-tk.C():
			if !got.Equal(want) {
				t.Errorf("tick at %v, want %v", got, want)
			}
		default:
			t.Errorf("no tick, want one at %v", want)
		}
	}
	expectNone := func() {
		t.Helper()
		select {
		case got := <-tk.C():
			t.Errorf("unexpected tick at %v", got)
		default:
		}
	}

	c.Advance(999 * time.Millisecond)
	expectNone()
	c.Advance(time.Millisecond)
	expectTick(start.Add(time.Second))
	// Unreceived ticks are dropped, as with time.Ticker.
	c.Advance(5 * time.Second)
	expectTick(start.Add(2 * time.Second))
	expectNone()
	c.Advance(time.Second) // next deadline is 7s, not 3s
	expectTick(start.Add(7 * time.Second))
	if got := c.Now(); !got.Equal(start.Add(7 * time.Second)) {
		t.Errorf("Now() = %v, want %v", got, start.Add(7*time.Second))
	}
	tk.Stop()
	if c.Tickers() != 0 {
		t.Errorf("Tickers() = %d after Stop, want 0", c.Tickers())
	}
	c.Advance(time.Hour)
	expectNone()
}

func TestFakes(t *testing.T) {
	var s Sensors
	if _, err := s.Temperature(); !errors.Is(err, hardware.ErrNotSupported) {
		t.Errorf("unset TemperatureFunc: err = %v, want ErrNotSupported", err)
	}
	s.LoadFunc = func() (hardware.LoadAvg, error) { return hardware.LoadAvg{One: 1}, nil }
	if l, err := s.Load(); err != nil || l.One != 1 {
		t.Errorf("Load() = %v, %v", l, err)
	}

	var w Watchdog
	w.Ping()
	w.SetPingError(errors.New("EIO"))
	if w.Ping() == nil {
		t.Error("Ping ignored SetPingError")
	}
	w.Close()
	if !errors.Is(w.Ping(), ErrClosed) || w.Pings() != 1 || w.Closes() != 1 {
		t.Errorf("after close: pings=%d closes=%d", w.Pings(), w.Closes())
	}
}
