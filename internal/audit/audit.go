// Package audit is the box's tamper-evident audit log: an append-only chain
// in the state store where each entry commits to the one before by hash
// (SHA-256 over the previous hash and the entry's length-prefixed fields).
// The chain is verified at start-up; every entry is also queued in the
// cloud-link outbox, so the fleet keeps a copy it can check.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/cloudlink/outbox"
	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/store"
)

var bucket = []byte("audit")

// ErrBroken means the chain does not verify: an entry was changed, removed
// or inserted.
var ErrBroken = errors.New("audit chain broken")

// Entry is one audit record.
type Entry struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Prev   []byte    `json:"prev"`
	Hash   []byte    `json:"hash"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Source string    `json:"source,omitempty"`
	Result string    `json:"result"`
}

// ChainHash is the hash an entry must carry given its fields and Prev.
func ChainHash(e Entry) []byte {
	h := sha256.New()
	h.Write(e.Prev)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], e.Seq)
	h.Write(n[:])
	binary.BigEndian.PutUint64(n[:], uint64(e.Time.UnixMilli()))
	h.Write(n[:])
	for _, s := range []string{e.Actor, e.Action, e.Target, e.Source, e.Result} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	return h.Sum(nil)
}

// Log is the audit log.
type Log struct {
	st  *store.Store
	ob  *outbox.Outbox // nil: not forwarded
	now func() time.Time
	log *slog.Logger

	mu   sync.Mutex
	last Entry
}

// Open returns the log and verifies the whole chain. A broken chain is
// reported as an error wrapping ErrBroken together with a usable Log that
// continues from the last entry, so the box keeps auditing.
func Open(st *store.Store, ob *outbox.Outbox, now func() time.Time, log *slog.Logger) (*Log, error) {
	if now == nil {
		now = time.Now
	}
	l := &Log{st: st, ob: ob, now: now, log: log}
	err := st.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return nil
		}
		prev := make([]byte, 32)
		var want uint64 = 1
		var broken error
		err := b.ForEach(func(k, v []byte) error {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("entry %x: %w", k, err)
			}
			switch {
			case broken != nil:
			case e.Seq != want:
				broken = fmt.Errorf("%w: entry %d where %d was expected", ErrBroken, e.Seq, want)
			case !bytes.Equal(e.Prev, prev):
				broken = fmt.Errorf("%w at entry %d: it does not follow entry %d", ErrBroken, e.Seq, e.Seq-1)
			case !bytes.Equal(e.Hash, ChainHash(e)):
				broken = fmt.Errorf("%w at entry %d: its content was changed", ErrBroken, e.Seq)
			}
			prev, want, l.last = e.Hash, e.Seq+1, e
			return nil
		})
		if err != nil {
			return err
		}
		return broken
	})
	return l, err
}

// Record appends an entry (durably) and queues it for the fleet.
func (l *Log) Record(ctx context.Context, actor, action, target, source, result string) (Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := Entry{Seq: l.last.Seq + 1, Time: l.now().UTC().Truncate(time.Millisecond), Prev: l.last.Hash,
		Actor: actor, Action: action, Target: target, Source: source, Result: result}
	if e.Prev == nil {
		e.Prev = make([]byte, 32)
	}
	e.Hash = ChainHash(e)
	raw, err := json.Marshal(e)
	if err != nil {
		return Entry{}, err
	}
	var fwd []byte
	if l.ob != nil {
		env, err := wire.New(wire.TypeAudit, e.Time, wire.Audit{Seq: e.Seq, Prev: e.Prev, Hash: e.Hash,
			Actor: clip(e.Actor), Action: clip(e.Action), Target: clip(e.Target), Source: clip(e.Source), Result: clip(e.Result)})
		if err != nil {
			return Entry{}, fmt.Errorf("audit: %w", err)
		}
		if fwd, err = wire.Encode(env); err != nil {
			return Entry{}, fmt.Errorf("audit: %w", err)
		}
	}
	// The entry and its copy for the fleet commit together: the fleet can
	// never miss an entry the box kept.
	if err := l.st.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		if err := b.Put(binary.BigEndian.AppendUint64(nil, e.Seq), raw); err != nil {
			return err
		}
		if fwd != nil {
			_, err = l.ob.AppendTx(tx, outbox.StreamAudit, fwd)
		}
		return err
	}); err != nil {
		return Entry{}, fmt.Errorf("audit: %w", err)
	}
	l.last = e
	if l.ob != nil {
		l.ob.Wake()
	}
	return e, nil
}

func clip(s string) string {
	if len(s) > wire.MaxValueLen {
		return s[:wire.MaxValueLen]
	}
	return s
}

// Entries returns up to n entries from seq from on.
func (l *Log) Entries(from uint64, n int) ([]Entry, error) {
	var out []Entry
	err := l.st.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, from)); k != nil && len(out) < n; k, v = c.Next() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}
