package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSchema(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if v, err := s.Schema(); err != nil || v != SchemaVersion {
		t.Fatalf("Schema = %d, %v", v, err)
	}
	// Pretend a newer build wrote it.
	s.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(metaBucket).Put(schemaKey, binary.BigEndian.AppendUint64(nil, SchemaVersion+1))
	})
	s.Close()
	if _, err := Open(dir, slog.New(slog.DiscardHandler)); !errors.Is(err, ErrNewSchema) {
		t.Fatalf("Open newer schema: %v, want ErrNewSchema", err)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer s.Close()
	if _, err := Open(dir, slog.New(slog.DiscardHandler)); !errors.Is(err, ErrLockedOpen) {
		t.Fatalf("second Open: %v, want ErrLockedOpen", err)
	}
}

type rec struct {
	N    int
	Name string
}

func TestBucket(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	b := NewBucket[rec]("recs")
	err := s.View(func(tx *bolt.Tx) error {
		_, err := b.Get(tx, "a")
		return err
	})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get on missing bucket: %v", err)
	}
	if err := s.Update(func(tx *bolt.Tx) error {
		for i, k := range []string{"b", "a", "c"} {
			if err := b.Put(tx, k, rec{i, k}); err != nil {
				return err
			}
		}
		return b.Delete(tx, "c")
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir) // survives reopen
	defer s.Close()
	var keys []string
	s.View(func(tx *bolt.Tx) error {
		r, err := b.Get(tx, "b")
		if err != nil || r != (rec{0, "b"}) {
			t.Errorf("Get b = %+v, %v", r, err)
		}
		return b.ForEach(tx, func(k string, v rec) error { keys = append(keys, k); return nil })
	})
	if fmt.Sprint(keys) != "[a b]" {
		t.Errorf("keys = %v", keys)
	}
}

func TestGroupCommit(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	gc := s.NewGroupCommit(0)
	b := NewBucket[int]("n")
	const writers, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("%02d-%03d", w, i)
				errs <- gc.Do(context.Background(), func(tx *bolt.Tx) error {
					if w == 3 && i == 7 {
						return errors.New("bad write")
					}
					return b.Put(tx, key, i)
				})
			}
		}()
	}
	wg.Wait()
	close(errs)
	var failed int
	for err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d writes failed, want exactly the 1 bad one", failed)
	}
	n := 0
	s.View(func(tx *bolt.Tx) error { return b.ForEach(tx, func(string, int) error { n++; return nil }) })
	if n != writers*each-1 {
		t.Errorf("%d records stored, want %d", n, writers*each-1)
	}
}

func BenchmarkGroupCommit(b *testing.B) {
	s, _ := Open(b.TempDir(), slog.New(slog.DiscardHandler))
	defer s.Close()
	payload := make([]byte, 200)
	bk := []byte("bench")
	s.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bk); return err })
	put := func(tx *bolt.Tx) error {
		bb := tx.Bucket(bk)
		id, _ := bb.NextSequence()
		return bb.Put(binary.BigEndian.AppendUint64(nil, id), payload)
	}
	b.Run("update-1-per-tx", func(b *testing.B) {
		for b.Loop() {
			s.Update(put)
		}
	})
	b.Run("groupcommit-64-writers", func(b *testing.B) {
		gc := s.NewGroupCommit(0)
		b.SetParallelism(32) // 2 cores × 32 = 64 writers
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				gc.Do(context.Background(), put)
			}
		})
	})
}

func TestSeenOnce(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		key   string
		until time.Time
		now   time.Time
		first bool
	}{
		{"a", now.Add(time.Minute), now, true},
		{"a", now.Add(time.Minute), now, false},
		{"b", now.Add(time.Second), now, true},
		{"c", now.Add(time.Hour), now.Add(2 * time.Second), true}, // prunes b
		{"b", now.Add(time.Hour), now.Add(2 * time.Second), true}, // b had expired: new again
	} {
		first, err := s.SeenOnce("seen", []byte(tc.key), tc.until, tc.now)
		if err != nil || first != tc.first {
			t.Errorf("SeenOnce(%s) = %v, %v; want %v", tc.key, first, err, tc.first)
		}
	}
	s.Close()
	s = open(t, dir) // a replay after a reboot is still refused
	defer s.Close()
	if first, _ := s.SeenOnce("seen", []byte("a"), now.Add(time.Minute), now); first {
		t.Error("id forgotten across reopen")
	}
}
