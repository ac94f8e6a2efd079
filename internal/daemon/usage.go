package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/cloudlink"
	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/store"
)

// DayUsage is the link's data use on one UTC day, kept in the store so that
// it survives restarts (a metered site pays per day or month).
type DayUsage struct {
	UpBytes   int64            `json:"up_bytes"`   // on the wire, TLS included
	DownBytes int64            `json:"down_bytes"` // on the wire
	ByStream  map[string]int64 `json:"by_stream"`  // delivered payload bytes
	Alerted   bool             `json:"alerted"`    // the day's threshold event was raised
}

var usageBucket = store.NewBucket[DayUsage]("usage")

// usageMeter turns the link's running counters into per-day totals.
type usageMeter struct {
	lastUp, lastDown int64
	lastBy           map[outbox.Stream]int64
}

// update adds what moved since the last call to today's record and returns
// it; it raises the day's alert event when the threshold is crossed.
func (c *cloud) updateUsage(ctx context.Context, m *usageMeter, st cloudlink.Stats, now time.Time) (DayUsage, error) {
	day := now.UTC().Format(time.DateOnly)
	var u DayUsage
	var alert bool
	limit := int64(c.d.cfg.Cloud.DataAlertMBPerDay) << 20
	err := c.d.st.Update(func(tx *bolt.Tx) error {
		var err error
		u, err = usageBucket.Get(tx, day)
		if err != nil && !isNotFound(err) {
			return err
		}
		if u.ByStream == nil {
			u.ByStream = map[string]int64{}
		}
		u.UpBytes += max(st.BytesUp-m.lastUp, 0)
		u.DownBytes += max(st.BytesDown-m.lastDown, 0)
		for s, n := range st.SentByStream {
			u.ByStream[string(s)] += max(n-m.lastBy[s], 0)
		}
		if limit > 0 && !u.Alerted && u.UpBytes+u.DownBytes > limit {
			u.Alerted, alert = true, true
		}
		return usageBucket.Put(tx, day, u)
	})
	if err != nil {
		return u, err
	}
	m.lastUp, m.lastDown, m.lastBy = st.BytesUp, st.BytesDown, st.SentByStream
	if alert {
		msg := fmt.Sprintf("data use today %d MB passed the threshold of %d MB", (u.UpBytes+u.DownBytes)>>20, c.d.cfg.Cloud.DataAlertMBPerDay)
		c.event(ctx, "data_usage", wire.SeverityWarning, msg, map[string]string{"day": day})
	}
	return u, nil
}

// event queues an event for the fleet.
func (c *cloud) event(ctx context.Context, kind, severity, msg string, attrs map[string]string) {
	env, err := wire.New(wire.TypeEvent, time.Now(), wire.Event{Kind: kind, Severity: severity, Message: msg, Attrs: attrs})
	if err == nil {
		var b []byte
		if b, err = wire.Encode(env); err == nil {
			_, err = c.ob.Append(ctx, outbox.StreamEvent, b)
		}
	}
	if err != nil && ctx.Err() == nil {
		c.d.log.Warn("event not queued", "kind", kind, "err", err)
	}
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
