package daemon

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/cloudlink"
	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/store"
)

func TestDataUsage(t *testing.T) {
	st, err := store.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ob, _ := outbox.Open(st, outbox.Options{})
	cfg := config.Default()
	cfg.Cloud.DataAlertMBPerDay = 1
	c := &cloud{d: &daemon{st: st, cfg: cfg, log: slog.New(slog.DiscardHandler)}, ob: ob}
	var m usageMeter
	day := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		up, down, telemetry int64
		at                  time.Time
		wantUp              int64
		wantEvents          int64
	}{
		{1000, 500, 300, day, 1000, 0},
		{600 << 10, 500 << 10, 900, day.Add(time.Hour), 600 << 10, 1},      // crosses 1 MB: one event
		{700 << 10, 600 << 10, 900, day.Add(2 * time.Hour), 700 << 10, 1},  // no second event the same day
		{800 << 10, 600 << 10, 900, day.Add(24 * time.Hour), 100 << 10, 1}, // a new day starts at the delta
	} {
		st := cloudlink.Stats{BytesUp: tc.up, BytesDown: tc.down, SentByStream: map[outbox.Stream]int64{outbox.StreamTelemetry: tc.telemetry}}
		u, err := c.updateUsage(context.Background(), &m, st, tc.at)
		if err != nil {
			t.Fatal(err)
		}
		obs, _ := ob.Stats()
		if u.UpBytes != tc.wantUp || obs.Streams[outbox.StreamEvent].Depth != tc.wantEvents {
			t.Errorf("at %v: up %d (want %d), events %d (want %d)", tc.at, u.UpBytes, tc.wantUp, obs.Streams[outbox.StreamEvent].Depth, tc.wantEvents)
		}
	}
}
