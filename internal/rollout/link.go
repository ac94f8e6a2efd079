package rollout

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/ota/manifest"
)

// Operator is the part of *operator.Operator a Link uses.
type Operator interface {
	Command(ctx context.Context, device, name string, args any, timeout time.Duration) (wire.CommandResult, error)
	Subscribe(fn func(operator.Message))
}

// Link is the Fleet over the operator's broker connection: Offer sends the
// "update" command with the signed documents; Outcome waits for the box's
// "ota" event of this release that ends its attempt (the same events
// `fleet watch` shows in its UPDATE column).
type Link struct {
	op       Operator
	args     map[string][]byte
	version  string
	mu       sync.Mutex
	waiting  map[string]chan Result // offered boxes without an outcome yet
	outcomes map[string]Result
}

// NewLink subscribes to the boxes' events; keysDoc and manifestDoc are
// what `release keygen` and `release sign` wrote.
func NewLink(op Operator, keysDoc, manifestDoc []byte) (*Link, error) {
	m, _, err := manifest.ParseManifestUnverified(manifestDoc)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if _, _, err := manifest.ParseKeysUnverified(keysDoc); err != nil {
		return nil, fmt.Errorf("keys document: %w", err)
	}
	l := &Link{
		op:       op,
		args:     map[string][]byte{"keys": keysDoc, "manifest": manifestDoc},
		version:  strconv.FormatUint(m.Version, 10),
		waiting:  map[string]chan Result{},
		outcomes: map[string]Result{},
	}
	op.Subscribe(l.receive)
	return l, nil
}

// final phases of the box's installer (ota/install) that end an attempt.
var final = map[string]bool{"committed": true, "rolled_back": true, "refused": true}

func (l *Link) receive(m operator.Message) {
	if m.Stream != "event" {
		return
	}
	var ev wire.Event
	if wire.DecodeBody(m.Env, &ev, wire.DefaultLimits()) != nil || ev.Kind != "ota" || !final[ev.Attrs["phase"]] {
		return
	}
	// A refusal before verifying carries no version (0).
	if v := ev.Attrs["version"]; v != l.version && !(ev.Attrs["phase"] == "refused" && v == "0") {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ch, ok := l.waiting[m.Device]
	if !ok {
		return // not offered (yet): an event of an earlier attempt
	}
	delete(l.waiting, m.Device)
	r := Result{Phase: ev.Attrs["phase"], Reason: ev.Attrs["reason"]}
	l.outcomes[m.Device] = r
	ch <- r
}

// Offer sends the update command and waits for the box to accept it.
func (l *Link) Offer(ctx context.Context, device string) error {
	l.mu.Lock()
	l.waiting[device] = make(chan Result, 1)
	delete(l.outcomes, device) // an earlier run's outcome
	l.mu.Unlock()
	// The command waits at the broker for a box that is offline: it has
	// the box's whole window (the rollout's per-box timeout) to connect,
	// take it and answer, not a minute.
	timeout := time.Minute
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	r, err := l.op.Command(ctx, device, "update", l.args, timeout)
	if err != nil {
		return err
	}
	if !r.OK {
		return fmt.Errorf("refused: %s", r.Error)
	}
	return nil
}

// Outcome waits for device's final event.
func (l *Link) Outcome(ctx context.Context, device string) (Result, error) {
	l.mu.Lock()
	ch, ok := l.waiting[device]
	r, done := l.outcomes[device]
	l.mu.Unlock()
	if done {
		return r, nil
	}
	if !ok {
		return Result{}, fmt.Errorf("%s was not offered the release", device)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}
