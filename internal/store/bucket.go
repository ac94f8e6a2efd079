package store

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Bucket is a typed view of one bbolt bucket: string keys, values of type T
// encoded as JSON. Declare one per kind of record, e.g.
//
//	var identity = store.NewBucket[Identity]("identity")
type Bucket[T any] struct {
	name []byte
}

// NewBucket names a typed bucket. The bucket is created on first write.
func NewBucket[T any](name string) Bucket[T] { return Bucket[T]{name: []byte(name)} }

// Name is the bucket's name in the database.
func (b Bucket[T]) Name() string { return string(b.name) }

// Get reads key; it returns ErrNotFound when absent.
func (b Bucket[T]) Get(tx *bolt.Tx, key string) (T, error) {
	var v T
	bk := tx.Bucket(b.name)
	if bk == nil {
		return v, fmt.Errorf("%s/%s: %w", b.name, key, ErrNotFound)
	}
	raw := bk.Get([]byte(key))
	if raw == nil {
		return v, fmt.Errorf("%s/%s: %w", b.name, key, ErrNotFound)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("%s/%s: decode: %w", b.name, key, err)
	}
	return v, nil
}

// Put writes key.
func (b Bucket[T]) Put(tx *bolt.Tx, key string, v T) error {
	bk, err := tx.CreateBucketIfNotExists(b.name)
	if err != nil {
		return fmt.Errorf("%s: %w", b.name, err)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s/%s: encode: %w", b.name, key, err)
	}
	return bk.Put([]byte(key), raw)
}

// Delete removes key; deleting an absent key is not an error.
func (b Bucket[T]) Delete(tx *bolt.Tx, key string) error {
	bk := tx.Bucket(b.name)
	if bk == nil {
		return nil
	}
	return bk.Delete([]byte(key))
}

// ForEach calls fn for every record in key order; an error stops the walk.
func (b Bucket[T]) ForEach(tx *bolt.Tx, fn func(key string, v T) error) error {
	bk := tx.Bucket(b.name)
	if bk == nil {
		return nil
	}
	return bk.ForEach(func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("%s/%s: decode: %w", b.name, k, err)
		}
		return fn(string(k), v)
	})
}
