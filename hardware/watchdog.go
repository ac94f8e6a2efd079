package hardware

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Watchdog is an armed hardware watchdog: unless Ping is called more often
// than the device timeout, the machine reboots. Close disarms it ("magic
// close") so that a clean shutdown does not trigger a reboot.
type Watchdog interface {
	Ping() error
	Close() error
}

// WatchdogState is the Petter's status, reported in telemetry.
type WatchdogState string

// States reported by Petter.State.
const (
	WatchdogStopped    WatchdogState = "stopped"     // Run not started or returned
	WatchdogAbsent     WatchdogState = "absent"      // no watchdog; nothing to pet
	WatchdogPetting    WatchdogState = "petting"     // checks pass, pings succeed
	WatchdogWithheld   WatchdogState = "withheld"    // checks fail; the device will fire
	WatchdogPingFailed WatchdogState = "ping-failed" // checks pass but the device rejects pings
)

// DefaultPetInterval is used when Petter.Interval is not set. It is well
// below the usual 15s (bcm2835) and 30s (iTCO, i6300esb) device timeouts.
const DefaultPetInterval = 5 * time.Second

// Petter pets Watchdog every Interval as long as Check reports the daemon
// healthy. When Check fails (or hangs) the pets stop and the device reboots
// the machine after its timeout, unless Check recovers first.
//
// All fields are optional: a nil Watchdog means there is none (Run just
// waits), a nil Check always passes, and Log and Clock default to a
// discarding logger and SystemClock. Fields must not change once Run has
// started.
type Petter struct {
	Watchdog Watchdog
	Interval time.Duration
	// Check is called synchronously before every pet, so it should be
	// quick; while it blocks, nothing is petted and cancellation waits.
	Check func() error
	Log   *slog.Logger
	Clock Clock

	mu    sync.Mutex
	state WatchdogState
}

// State returns the current status. It is safe to call concurrently with Run.
func (p *Petter) State() WatchdogState {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == "" {
		return WatchdogStopped
	}
	return p.state
}

func (p *Petter) setState(s WatchdogState) {
	p.mu.Lock()
	p.state = s
	p.mu.Unlock()
}

// Run pets the watchdog until ctx is done, then magic-closes it so that the
// shutdown does not reboot the machine. It returns nil on cancellation, or
// the error from closing the device. The first check and pet happen
// immediately. Log lines are emitted only on state changes.
func (p *Petter) Run(ctx context.Context) error {
	log := p.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if p.Watchdog == nil {
		p.setState(WatchdogAbsent)
		log.Info("no hardware watchdog; not petting")
		<-ctx.Done()
		p.setState(WatchdogStopped)
		return nil
	}
	clock := p.Clock
	if clock == nil {
		clock = SystemClock{}
	}
	interval := p.Interval
	if interval <= 0 {
		interval = DefaultPetInterval
	}
	// Create the ticker before the first check so that a test advancing a
	// fake clock after observing that check cannot lose the tick.
	ticker := clock.NewTicker(interval)
	defer ticker.Stop()

	var (
		checkFailing, pingFailing bool
		failingSince              time.Time
	)
	tick := func(now time.Time) {
		if err := p.check(); err != nil {
			if !checkFailing {
				checkFailing, failingSince = true, now
				log.Warn("health check failing; withholding watchdog pets", "err", err)
			}
			p.setState(WatchdogWithheld)
			return
		}
		if checkFailing {
			log.Info("health check recovered; petting watchdog again", "failed_for", now.Sub(failingSince))
			checkFailing = false
		}
		if err := p.Watchdog.Ping(); err != nil {
			if !pingFailing {
				log.Warn("watchdog ping failed", "err", err)
			}
			pingFailing = true
			p.setState(WatchdogPingFailed)
			return
		}
		if pingFailing {
			log.Info("watchdog ping succeeded again")
			pingFailing = false
		}
		p.setState(WatchdogPetting)
	}

	tick(clock.Now())
	for {
		select {
		case <-ctx.Done():
			p.setState(WatchdogStopped)
			if err := p.Watchdog.Close(); err != nil {
				return fmt.Errorf("hardware: closing watchdog: %w", err)
			}
			log.Info("hardware watchdog disarmed")
			return nil
		case now := <-ticker.C():
			tick(now)
		}
	}
}

func (p *Petter) check() error {
	if p.Check == nil {
		return nil
	}
	return p.Check()
}
