package audit

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/internal/store"
)

func TestChain(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ob, _ := outbox.Open(st, outbox.Options{})
	l, err := Open(st, ob, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"boot", "command ping", "config apply"} {
		if _, err := l.Record(context.Background(), "system", a, "", "", "ok"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(st, nil, nil, nil); err != nil {
		t.Fatalf("intact chain: %v", err)
	}
	s, _ := ob.Stats()
	if s.Streams[outbox.StreamAudit].Depth != 3 {
		t.Errorf("audit entries queued for the fleet: %d", s.Streams[outbox.StreamAudit].Depth)
	}
	for _, tc := range []struct {
		name   string
		tamper func(b *bolt.Bucket)
	}{
		{"changed result", func(b *bolt.Bucket) {
			var e Entry
			json.Unmarshal(b.Get(key(2)), &e)
			e.Result = "denied"
			raw, _ := json.Marshal(e)
			b.Put(key(2), raw)
		}},
		{"removed entry", func(b *bolt.Bucket) { b.Delete(key(2)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st.Update(func(tx *bolt.Tx) error { tc.tamper(tx.Bucket(bucket)); return nil })
			l2, err := Open(st, nil, nil, nil)
			if !errors.Is(err, ErrBroken) {
				t.Fatalf("tampered chain: %v", err)
			}
			t.Logf("detected: %v", err)
			if _, err := l2.Record(context.Background(), "system", "after", "", "", "ok"); err != nil {
				t.Fatal(err) // auditing goes on
			}
		})
	}
	st.Close()
}

func key(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
