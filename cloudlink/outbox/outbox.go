// Package outbox is the box's durable store-and-forward queue for everything it
// sends to the cloud. A message counts as sent once it is committed here; the
// cloud-link sender reads each stream in order, publishes with MQTT QoS 1 and
// acknowledges an entry only when the broker's PUBACK arrives. Delivery is
// therefore at least once: after a crash, a cancelled Append or an Ack lost
// to a crash, the same payload can be published twice, so every payload
// carries a unique message id and the receiver drops duplicates. The outbox
// never parses payloads.
//
// # Layout
//
// Everything lives in the store's bbolt file under the top bucket "outbox":
// one nested bucket per stream whose keys are big-endian uint64 sequence
// numbers (bbolt's NextSequence, never reused, even after every entry was
// acknowledged) and whose values are the enqueue time (unix ms, 8 bytes,
// big-endian) followed by the payload; and one record "stats/<stream>" per
// stream holding entry count, accounted bytes and dropped count (3 × uint64).
// The records change in the same transaction as the entries, so Open, Stats and
// the budget check never scan entries. Only a missing or malformed stats
// record makes Open rebuild it by a sequential scan of that stream, which reads
// the whole stream (seconds for hundreds of MB on an SD card).
//
// # Durability
//
// Append and Ack return after their transaction is fsynced. They go through one
// store.GroupCommit, so concurrent calls share a transaction and its fsync;
// a lone caller pays one fsync and no added delay.
//
// # Budget and drop policy
//
// Each entry is accounted as its payload plus 32 bytes (key, header, bbolt leaf
// element). When an Append would take the total over Options.BudgetBytes, the
// outbox first drops entries, oldest first, in this order:
//
//  1. telemetry,
//  2. events,
//  3. command results and config reports (whichever head is older),
//  4. audit entries, only when nothing else is left.
//
// The entries being appended are never dropped to make room for themselves;
// an Append larger than the whole budget fails with ErrTooLarge. A newer entry
// of a low-priority stream may thus displace the oldest audit entries, but only
// by about one entry: the next Append drops that low-priority entry first. A
// budget lowered between runs is enforced at the next Append. Dropping is
// counted per stream, durably and cumulatively (never reset): the sender compares
// Stats().Streams[s].Dropped with what it last reported to raise "outbox_dropped".
//
// The budget bounds accounted bytes, not the file: bbolt pages are partly
// filled, the freelist takes room and the file never shrinks; as a rough,
// unmeasured rule, reserve twice the budget on disk.
package outbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/internal/store"
)

// Stream names one ordered queue of the outbox; the value is its bucket name.
type Stream string

// The streams, listed in drop order (see the package doc).
const (
	StreamTelemetry     Stream = "telemetry"
	StreamEvent         Stream = "event"
	StreamCommandResult Stream = "command_result"
	StreamConfig        Stream = "config.reported"
	StreamAudit         Stream = "audit"
)

const numStreams = 5

// Streams returns every stream in drop order: the first is sacrificed first.
func Streams() []Stream { l := streamList(); return l[:] }

func streamList() [numStreams]Stream {
	return [...]Stream{StreamTelemetry, StreamEvent, StreamCommandResult, StreamConfig, StreamAudit}
}

// index is the stream's position in Streams, or -1 for an unknown stream.
func index(s Stream) int {
	for i, x := range streamList() {
		if x == s {
			return i
		}
	}
	return -1
}

// tier is the drop tier of streamList()[i]: lower tiers are dropped first.
func tier(i int) int { return [numStreams]int{0, 1, 2, 2, 3}[i] }

const (
	topBucket     = "outbox"
	headerLen     = 8
	entryOverhead = 32          // accounted per entry on top of the payload
	fillPercent   = 0.95        // keys only ever grow: pack pages densely
	warnEvery     = time.Minute // drop warnings are rate-limited
)

var (
	// ErrTooLarge means the appended payloads alone exceed the budget.
	ErrTooLarge = errors.New("outbox: larger than the whole budget")
	// ErrUnknownStream means the stream is not one of Streams().
	ErrUnknownStream = errors.New("outbox: unknown stream")
	// ErrCorrupt means a record of the outbox does not have its expected shape.
	ErrCorrupt = errors.New("outbox: corrupt record")
)

// Seq numbers the entries of one stream, starting at 1, in commit order.
type Seq uint64

// Entry is one pending message as read by the sender.
type Entry struct {
	Stream   Stream
	Seq      Seq
	Enqueued time.Time // Options.Clock at Append, millisecond precision
	Payload  []byte    // a copy: the caller owns it
}

// Options configure Open.
type Options struct {
	// BudgetBytes caps the accounted size of all pending entries (payload + 32
	// bytes each); 0 means unlimited.
	BudgetBytes int64
	// Clock stamps entries and ages them in Stats; nil means time.Now.
	Clock func() time.Time
	// Log receives drop warnings and repairs; nil discards.
	Log *slog.Logger
}

// Outbox is the durable outbox inside an open store. It is safe for concurrent
// use and needs no Close: it lives as long as the store.
type Outbox struct {
	db     *bolt.DB
	gc     *store.GroupCommit
	budget int64
	clock  func() time.Time
	log    *slog.Logger
	notify chan struct{}

	mu       sync.Mutex
	lastWarn time.Time
}

// Open prepares the outbox buckets in st (one fsynced transaction) and returns
// the outbox. Its cost does not depend on the number of pending entries.
func Open(st *store.Store, opts Options) (*Outbox, error) {
	if opts.BudgetBytes < 0 {
		return nil, fmt.Errorf("outbox: negative budget %d", opts.BudgetBytes)
	}
	o := &Outbox{
		db: st.DB(), gc: st.NewGroupCommit(0), budget: opts.BudgetBytes,
		clock: opts.Clock, log: opts.Log, notify: make(chan struct{}, 1),
	}
	if o.clock == nil {
		o.clock = time.Now
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	err := o.db.Update(func(tx *bolt.Tx) error {
		top, err := tx.CreateBucketIfNotExists([]byte(topBucket))
		if err != nil {
			return err
		}
		for _, s := range Streams() {
			b, err := top.CreateBucketIfNotExists([]byte(s))
			if err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
			old := top.Get(statsKey(s))
			if len(old) == 24 {
				continue
			}
			c, err := recount(b)
			if err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
			if old != nil {
				o.log.Warn("outbox: stats record malformed, recounted (dropped count lost)", "stream", s, "entries", c.n)
			}
			if err := c.put(top, s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: open: %w", err)
	}
	return o, nil
}

// Append commits payload to the end of stream s and returns its sequence
// number once it is durable. See AppendBatch.
func (o *Outbox) Append(ctx context.Context, s Stream, payload []byte) (Seq, error) {
	seqs, err := o.AppendBatch(ctx, s, payload)
	if err != nil {
		return 0, err
	}
	return seqs[0], nil
}

// AppendBatch commits payloads, in order, to the end of stream s in one
// transaction (all or none) and returns their sequence numbers once durable;
// the payloads are copied. Older entries are dropped by the package's policy to
// keep within the budget; payloads that together exceed the budget fail with
// ErrTooLarge. If ctx ends while waiting, the entries may still be committed.
// A returned entry may already have been dropped by a later Append in the same
// shared transaction; that is counted like any other drop.
func (o *Outbox) AppendBatch(ctx context.Context, s Stream, payloads ...[]byte) ([]Seq, error) {
	i := index(s)
	if i < 0 {
		return nil, fmt.Errorf("%w: %q", ErrUnknownStream, s)
	}
	if len(payloads) == 0 {
		return nil, nil
	}
	var need int64
	for _, p := range payloads {
		need += int64(len(p)) + entryOverhead
	}
	if o.budget > 0 && need > o.budget {
		return nil, fmt.Errorf("%w: %d bytes for %s, budget %d", ErrTooLarge, need, s, o.budget)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("outbox: append to %s: %w", s, err)
	}
	seqs := make([]Seq, len(payloads))
	var dropped [numStreams]int64
	err := o.gc.Do(ctx, func(tx *bolt.Tx) error {
		dropped = [numStreams]int64{} // a retry starts over
		return o.appendTx(tx, i, need, payloads, seqs, &dropped)
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: append to %s: %w", s, err)
	}
	o.logDrops(s, dropped)
	o.Wake()
	return seqs, nil
}

// AppendTx appends inside the caller's read-write transaction, so that a
// record of the caller's (an audit entry, say) and its outbox copy commit
// together or not at all. Call Wake after the transaction has committed.
func (o *Outbox) AppendTx(tx *bolt.Tx, s Stream, payload []byte) (Seq, error) {
	i := index(s)
	if i < 0 {
		return 0, fmt.Errorf("%w: %q", ErrUnknownStream, s)
	}
	need := int64(len(payload)) + entryOverhead
	if o.budget > 0 && need > o.budget {
		return 0, fmt.Errorf("%w: %d bytes for %s, budget %d", ErrTooLarge, need, s, o.budget)
	}
	seqs := make([]Seq, 1)
	var dropped [numStreams]int64
	if err := o.appendTx(tx, i, need, [][]byte{payload}, seqs, &dropped); err != nil {
		return 0, fmt.Errorf("outbox: append to %s: %w", s, err)
	}
	o.logDrops(s, dropped)
	return seqs[0], nil
}

// Wake tells the sender that entries are waiting.
func (o *Outbox) Wake() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

func (o *Outbox) appendTx(tx *bolt.Tx, i int, need int64, payloads [][]byte, seqs []Seq, dropped *[numStreams]int64) error {
	t, err := load(tx)
	if err != nil {
		return err
	}
	if err := t.makeRoom(need, o.budget, dropped); err != nil {
		return err
	}
	b := t.bucket(i)
	b.FillPercent = fillPercent
	now := uint64(o.clock().UnixMilli())
	for j, p := range payloads {
		n, err := b.NextSequence()
		if err != nil {
			return err
		}
		v := make([]byte, headerLen, headerLen+len(p)) // bbolt keeps it until commit
		binary.BigEndian.PutUint64(v, now)
		if err := b.Put(seqKey(Seq(n)), append(v, p...)); err != nil {
			return err
		}
		seqs[j] = Seq(n)
	}
	t.c[i].n += int64(len(payloads))
	t.c[i].bytes += need
	return t.save()
}

// Next returns up to max (at least 1) entries of stream s with a sequence
// number above after, in order. A sender starts with after = 0 and then passes
// the last Seq it has read; entries dropped meanwhile are simply skipped.
func (o *Outbox) Next(s Stream, after Seq, max int) ([]Entry, error) {
	if index(s) < 0 {
		return nil, fmt.Errorf("%w: %q", ErrUnknownStream, s)
	}
	if after == math.MaxUint64 {
		return nil, nil
	}
	if max < 1 {
		max = 1
	}
	var out []Entry
	err := o.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte(topBucket)).Bucket([]byte(s)).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			if len(k) != 8 || len(v) < headerLen {
				return fmt.Errorf("%w: %s entry %x: %d-byte key, %d-byte value", ErrCorrupt, s, k, len(k), len(v))
			}
			out = append(out, Entry{
				Stream:   s,
				Seq:      Seq(binary.BigEndian.Uint64(k)),
				Enqueued: time.UnixMilli(int64(binary.BigEndian.Uint64(v))),
				Payload:  bytes.Clone(v[headerLen:]), // v points into the mmap
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: next in %s: %w", s, err)
	}
	return out, nil
}

// Ack deletes the given entries of stream s once the broker has acknowledged
// them, and returns when the deletion is durable. Sequence numbers that are not
// pending (already acknowledged or dropped) are ignored.
func (o *Outbox) Ack(ctx context.Context, s Stream, seqs ...Seq) error {
	i := index(s)
	if i < 0 {
		return fmt.Errorf("%w: %q", ErrUnknownStream, s)
	}
	if len(seqs) == 0 {
		return nil
	}
	err := o.gc.Do(ctx, func(tx *bolt.Tx) error {
		t, err := load(tx)
		if err != nil {
			return err
		}
		b := t.bucket(i)
		for _, q := range seqs {
			k := seqKey(q)
			v := b.Get(k)
			if v == nil {
				continue
			}
			t.c[i].n--
			t.c[i].bytes -= int64(len(v)) - headerLen + entryOverhead
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return t.save()
	})
	if err != nil {
		return fmt.Errorf("outbox: ack in %s: %w", s, err)
	}
	return nil
}

// Notify returns a channel that receives after Appends. It has one slot, so
// many Appends coalesce into one wake-up and Append never blocks on it; use a
// single consumer that reads every stream until Next is empty at start and
// whenever woken.
func (o *Outbox) Notify() <-chan struct{} { return o.notify }

// StreamStats describes one stream.
type StreamStats struct {
	Depth   int64         // pending entries
	Bytes   int64         // accounted bytes: payloads + 32 per entry
	Oldest  time.Time     // enqueue time of the oldest pending entry; zero if none
	Age     time.Duration // Clock() - Oldest; 0 if none
	Dropped int64         // entries ever dropped for the budget (cumulative, durable)
}

// Stats is a snapshot of the outbox.
type Stats struct {
	Streams    map[Stream]StreamStats
	TotalBytes int64
	Budget     int64 // 0 = unlimited
}

// Stats reads a consistent snapshot; its cost does not grow with the depth.
func (o *Outbox) Stats() (Stats, error) {
	st := Stats{Streams: make(map[Stream]StreamStats, numStreams), Budget: o.budget}
	now := o.clock()
	err := o.db.View(func(tx *bolt.Tx) error {
		t, err := load(tx)
		if err != nil {
			return err
		}
		for i, s := range streamList() {
			ss := StreamStats{Depth: t.c[i].n, Bytes: t.c[i].bytes, Dropped: t.c[i].dropped}
			if k, v := t.bucket(i).Cursor().First(); k != nil && len(v) >= headerLen {
				ss.Oldest = time.UnixMilli(int64(binary.BigEndian.Uint64(v)))
				ss.Age = max(0, now.Sub(ss.Oldest))
			}
			st.Streams[s] = ss
			st.TotalBytes += ss.Bytes
		}
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("outbox: stats: %w", err)
	}
	return st, nil
}

func (o *Outbox) logDrops(s Stream, dropped [numStreams]int64) {
	var args []any
	for i, n := range dropped {
		if n > 0 {
			args = append(args, string(streamList()[i]), n)
		}
	}
	if args == nil {
		return
	}
	o.mu.Lock()
	lvl := slog.LevelDebug
	if o.lastWarn.IsZero() || time.Since(o.lastWarn) >= warnEvery {
		lvl, o.lastWarn = slog.LevelWarn, time.Now()
	}
	o.mu.Unlock()
	if !o.log.Enabled(context.Background(), lvl) {
		return
	}
	o.log.Log(context.Background(), lvl, "outbox over budget, dropped oldest entries",
		append([]any{"for", s, "budget", o.budget}, args...)...)
}

func seqKey(q Seq) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(q)) }

func statsKey(s Stream) []byte { return []byte("stats/" + s) }

// counters is a stream's stats record.
type counters struct{ n, bytes, dropped int64 }

func (c counters) put(top *bolt.Bucket, s Stream) error {
	v := make([]byte, 0, 24)
	for _, x := range []int64{c.n, c.bytes, c.dropped} {
		v = binary.BigEndian.AppendUint64(v, uint64(x))
	}
	return top.Put(statsKey(s), v)
}

// recount rebuilds a stream's counters from its entries (a sequential scan).
func recount(b *bolt.Bucket) (counters, error) {
	var c counters
	err := b.ForEach(func(k, v []byte) error {
		if len(k) != 8 || len(v) < headerLen {
			return fmt.Errorf("%w: entry %x", ErrCorrupt, k)
		}
		c.n++
		c.bytes += int64(len(v)) - headerLen + entryOverhead
		return nil
	})
	return c, err
}

// txState is the outbox as seen by one transaction: buckets and counters.
type txState struct {
	top    *bolt.Bucket
	c, old [numStreams]counters
}

func load(tx *bolt.Tx) (*txState, error) {
	t := &txState{top: tx.Bucket([]byte(topBucket))}
	if t.top == nil {
		return nil, fmt.Errorf("%w: bucket %q missing", ErrCorrupt, topBucket)
	}
	for i, s := range streamList() {
		v := t.top.Get(statsKey(s))
		if len(v) != 24 || t.bucket(i) == nil {
			return nil, fmt.Errorf("%w: stream %s: bucket or %d-byte stats record", ErrCorrupt, s, len(v))
		}
		t.c[i] = counters{int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:])), int64(binary.BigEndian.Uint64(v[16:]))}
	}
	t.old = t.c
	return t, nil
}

func (t *txState) bucket(i int) *bolt.Bucket { return t.top.Bucket([]byte(streamList()[i])) }

func (t *txState) save() error {
	for i, s := range streamList() {
		if t.c[i] != t.old[i] {
			if err := t.c[i].put(t.top, s); err != nil {
				return err
			}
		}
	}
	t.old = t.c
	return nil
}

// makeRoom drops entries by policy until need more bytes fit the budget.
func (t *txState) makeRoom(need, budget int64, dropped *[numStreams]int64) error {
	if budget <= 0 {
		return nil
	}
	var total int64
	for _, c := range t.c {
		total += c.bytes
	}
	for tr := 0; total+need > budget; tr++ {
		if tr > tier(numStreams-1) {
			return fmt.Errorf("%w: %d bytes counted but no entries left", ErrCorrupt, total)
		}
		for total+need > budget {
			best, bestTime, size := -1, uint64(0), int64(0)
			var head *bolt.Cursor
			for i := range numStreams {
				if tier(i) != tr {
					continue
				}
				c := t.bucket(i).Cursor()
				k, v := c.First()
				if k == nil {
					continue
				}
				if len(v) < headerLen {
					return fmt.Errorf("%w: %s entry %x", ErrCorrupt, streamList()[i], k)
				}
				if ts := binary.BigEndian.Uint64(v); best < 0 || ts < bestTime {
					best, bestTime, head = i, ts, c
					size = int64(len(v)) - headerLen + entryOverhead
				}
			}
			if best < 0 {
				break // tier empty: next tier
			}
			if err := head.Delete(); err != nil {
				return err
			}
			t.c[best].n--
			t.c[best].bytes -= size
			t.c[best].dropped++
			dropped[best]++
			total -= size
		}
	}
	return nil
}
