package outbox

import (
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkAppend measures durable 200-byte appends per second: the outbox with
// 1 and 64 writers (unlimited, and at a full budget where every Append also
// drops one entry), next to the references: one db.Update per record, and
// the raw group commit of the store writing the same records (target: the
// outbox at 64 writers ≥ 0.8× raw-groupcommit).
func BenchmarkAppend(b *testing.B) {
	payload := make([]byte, 200)
	for _, bc := range []struct {
		name    string
		writers int
		budget  int64 // entries of 232 accounted bytes
		ref     bool  // plain db.Update, one record per transaction
	}{
		{"outbox/writers=1", 1, 0, false},
		{"outbox/writers=64", 64, 0, false},
		{"outbox-full-budget/writers=64", 64, 1000 * 232, false},
		{"db.Update-1-per-tx/writers=1", 1, 0, true},
		{"db.Update-1-per-tx/writers=64", 64, 0, true},
		{"raw-groupcommit/writers=64", 64, 0, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			o, _ := open(b, b.TempDir(), Options{BudgetBytes: bc.budget})
			for range bc.budget / 232 { // fill the budget so every Append drops
				if _, err := o.Append(ctx, StreamTelemetry, payload); err != nil {
					b.Fatal(err)
				}
			}
			write := func() error { _, err := o.Append(ctx, StreamTelemetry, payload); return err }
			raw := func(tx *bolt.Tx) error {
				bb := tx.Bucket([]byte("bench"))
				n, _ := bb.NextSequence()
				return bb.Put(binary.BigEndian.AppendUint64(nil, n), payload)
			}
			if bc.ref {
				bk := []byte("bench")
				if err := o.db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bk); return err }); err != nil {
					b.Fatal(err)
				}
				write = func() error { return o.db.Update(raw) }
				if strings.HasPrefix(bc.name, "raw-groupcommit") {
					// The reference the outbox is held to: the store's
					// group commit writing the same records, nothing else.
					write = func() error { return o.gc.Do(ctx, raw) }
				}
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range bc.writers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if err := write(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
