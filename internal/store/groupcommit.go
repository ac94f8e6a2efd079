package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// GroupCommit batches writes from many goroutines into shared transactions:
// while one transaction commits (and fsyncs), new writes queue up, and the
// next transaction takes all of them. Unlike bolt.DB.Batch it never waits for
// a timer, so a lone writer pays one fsync and no delay.
//
// A write returns only after its transaction is durable. If a combined
// transaction fails, each of its writes is retried alone so that one bad
// write cannot fail the others.
type GroupCommit struct {
	db       *bolt.DB
	maxBatch int

	mu      sync.Mutex
	pending []*gcReq
	running bool
}

type gcReq struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// NewGroupCommit returns a group committer for s; maxBatch bounds how many
// writes share one transaction (0 means 1024).
func (s *Store) NewGroupCommit(maxBatch int) *GroupCommit {
	if maxBatch <= 0 {
		maxBatch = 1024
	}
	return &GroupCommit{db: s.db, maxBatch: maxBatch}
}

// Do runs fn inside a shared read-write transaction and returns once that
// transaction is committed. fn may run more than once (on a retry after a
// failed batch) and must be idempotent within a transaction's view.
func (g *GroupCommit) Do(ctx context.Context, fn func(*bolt.Tx) error) error {
	r := &gcReq{fn: fn, done: make(chan error, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, r)
	if !g.running {
		g.running = true
		go g.loop()
	}
	g.mu.Unlock()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The write may still commit; the caller only stops waiting.
		return fmt.Errorf("group commit: %w", ctx.Err())
	}
}

func (g *GroupCommit) loop() {
	for {
		g.mu.Lock()
		n := min(len(g.pending), g.maxBatch)
		if n == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		batch := g.pending[:n:n]
		g.pending = g.pending[n:]
		g.mu.Unlock()
		g.commit(batch)
	}
}

var errRetryAlone = errors.New("retry alone")

func (g *GroupCommit) commit(batch []*gcReq) {
	err := g.db.Update(func(tx *bolt.Tx) error {
		for _, r := range batch {
			if err := r.fn(tx); err != nil {
				return errRetryAlone
			}
		}
		return nil
	})
	for _, r := range batch {
		switch {
		case err == nil:
			r.done <- nil
		case errors.Is(err, errRetryAlone):
			// One write failed and rolled the batch back: run each alone so
			// it gets its own verdict.
			r.done <- g.db.Update(r.fn)
		default:
			// The commit itself failed (a disk error): so did every write.
			r.done <- err
		}
	}
}
