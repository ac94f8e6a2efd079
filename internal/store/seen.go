package store

import (
	"bytes"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SeenOnce records key in bucket until the time until, and reports whether
// it was new: the one mechanism behind "refuse a replay" (command ids,
// single-use tokens). Entries past their time are pruned on the way, so the
// bucket stays as small as what is still live. One fsynced transaction.
func (s *Store) SeenOnce(bucket string, key []byte, until, now time.Time) (first bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		if b.Get(key) != nil {
			return nil
		}
		first = true
		if err := b.Put(key, binary.BigEndian.AppendUint64(nil, uint64(until.UnixNano()))); err != nil {
			return err
		}
		// Prune in key order at most a few expired entries per call.
		c := b.Cursor()
		pruned := 0
		for k, v := c.First(); k != nil && pruned < 16; k, v = c.Next() {
			if len(v) == 8 && int64(binary.BigEndian.Uint64(v)) < now.UnixNano() && !bytes.Equal(k, key) {
				if err := c.Delete(); err != nil {
					return err
				}
				pruned++
			}
		}
		return nil
	})
	return first, err
}
