// Package store is outpostd's durable state: one bbolt file in the data dir,
// owned by the daemon, with a schema version checked at open, typed buckets
// and a group-commit helper so that many small writers share one fsync.
//
// Recordings and other bulk data are files, not blobs in here; files that sit
// beside the database are written with internal/atomicfile.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout this build reads and writes. Opening a store
// written by a newer build fails rather than guessing.
const SchemaVersion = 1

// FileName is the database file inside the data dir.
const FileName = "outpost.db"

var (
	metaBucket    = []byte("meta")
	schemaKey     = []byte("schema_version")
	ErrNewSchema  = errors.New("store was written by a newer Outpost")
	ErrNotFound   = errors.New("not found")
	ErrLockedOpen = errors.New("store is locked by another process")
)

// migrations[i] upgrades schema i to i+1. Index 0 creates a fresh store.
var migrations = []func(tx *bolt.Tx) error{
	func(tx *bolt.Tx) error { return nil },
}

// Store is the open database.
type Store struct {
	db  *bolt.DB
	log *slog.Logger
}

// Open opens (creating if needed) the store in dir and brings its schema up to
// SchemaVersion.
func Open(dir string, log *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("store %s: %w", path, ErrLockedOpen)
		}
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	s := &Store{db: db, log: log}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) migrate() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		var v uint64
		if b := meta.Get(schemaKey); len(b) == 8 {
			v = binary.BigEndian.Uint64(b)
		} else if b != nil {
			return fmt.Errorf("schema version record is corrupt (%d bytes)", len(b))
		}
		if v > SchemaVersion {
			return fmt.Errorf("%w: schema %d, this build knows %d", ErrNewSchema, v, SchemaVersion)
		}
		for ; v < SchemaVersion; v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("migrating schema %d→%d: %w", v, v+1, err)
			}
			s.log.Info("store schema migrated", "from", v, "to", v+1)
		}
		return meta.Put(schemaKey, binary.BigEndian.AppendUint64(nil, SchemaVersion))
	})
}

// Schema returns the stored schema version.
func (s *Store) Schema() (uint64, error) {
	var v uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		v = binary.BigEndian.Uint64(tx.Bucket(metaBucket).Get(schemaKey))
		return nil
	})
	return v, err
}

// DB exposes the bbolt handle to packages that need their own transactions.
func (s *Store) DB() *bolt.DB { return s.db }

// Update runs fn in a read-write transaction (one fsync per call).
func (s *Store) Update(fn func(tx *bolt.Tx) error) error { return s.db.Update(fn) }

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(tx *bolt.Tx) error) error { return s.db.View(fn) }

// Close closes the database; everything committed is on disk.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}
