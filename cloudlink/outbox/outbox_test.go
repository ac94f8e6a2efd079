package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/internal/store"
)

var ctx = context.Background()

// open opens the store in dir and the outbox in it; close closes the store.
func open(t testing.TB, dir string, opts Options) (o *Outbox, close func()) {
	t.Helper()
	st, err := store.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if o, err = Open(st, opts); err != nil {
		st.Close()
		t.Fatal(err)
	}
	closed := false
	close = func() {
		if !closed {
			closed = true
			if err := st.Close(); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(close)
	return o, close
}

// tickClock advances one second per call, so enqueue times order appends.
func tickClock() func() time.Time {
	var n atomic.Int64
	return func() time.Time { return time.Unix(1_700_000_000+n.Add(1), 0) }
}

// all reads a whole stream through Next in small pages.
func all(t testing.TB, o *Outbox, s Stream) []Entry {
	t.Helper()
	var out []Entry
	var after Seq
	for {
		es, err := o.Next(s, after, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			return out
		}
		out = append(out, es...)
		after = es[len(es)-1].Seq
	}
}

func payloads(es []Entry) []string {
	var p []string
	for _, e := range es {
		p = append(p, string(e.Payload))
	}
	return p
}

// checkConsistent verifies bbolt's invariants and that the stats records match
// the entries, and that entries are in strictly increasing seq order.
func checkConsistent(t testing.TB, o *Outbox) {
	t.Helper()
	err := o.db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return fmt.Errorf("bbolt check: %w", errors.Join(errs...))
		}
		ts, err := load(tx)
		if err != nil {
			return err
		}
		for i, s := range Streams() {
			c, err := recount(ts.bucket(i))
			if err != nil {
				return err
			}
			if c.n != ts.c[i].n || c.bytes != ts.c[i].bytes {
				return fmt.Errorf("%s: stats say %d entries/%d bytes, data has %d/%d", s, ts.c[i].n, ts.c[i].bytes, c.n, c.bytes)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOrderAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	clock := tickClock()
	o, closeStore := open(t, dir, Options{Clock: clock})
	want := map[Stream][]string{}
	for i := range 40 {
		for _, s := range Streams() {
			p := fmt.Sprintf("%s-%03d", s, i)
			if i%10 == 9 { // some batches, too
				ps := []string{p + "a", p + "b", p + "c"}
				if _, err := o.AppendBatch(ctx, s, []byte(ps[0]), []byte(ps[1]), []byte(ps[2])); err != nil {
					t.Fatal(err)
				}
				want[s] = append(want[s], ps...)
				continue
			}
			if _, err := o.Append(ctx, s, []byte(p)); err != nil {
				t.Fatal(err)
			}
			want[s] = append(want[s], p)
		}
	}
	// The sender reads half of each stream before a restart.
	half := map[Stream]Seq{}
	for _, s := range Streams() {
		es, err := o.Next(s, 0, len(want[s])/2)
		if err != nil {
			t.Fatal(err)
		}
		half[s] = es[len(es)-1].Seq
	}
	closeStore()

	o, closeStore = open(t, dir, Options{Clock: clock})
	for _, s := range Streams() {
		es := all(t, o, s)
		if got := payloads(es); !slices.Equal(got, want[s]) {
			t.Fatalf("%s after reopen:\n got %q\nwant %q", s, got, want[s])
		}
		for i, e := range es {
			if e.Stream != s || e.Seq != Seq(i+1) || e.Enqueued.IsZero() || (i > 0 && e.Enqueued.Before(es[i-1].Enqueued)) {
				t.Fatalf("%s entry %d: %+v", s, i, e)
			}
		}
		rest, err := o.Next(s, half[s], 1000)
		if err != nil || len(rest) != len(want[s])-len(want[s])/2 || string(rest[0].Payload) != want[s][len(want[s])/2] {
			t.Fatalf("%s: Next after the half read before reopen: %d entries, %v", s, len(rest), err)
		}
	}
	// Sequence numbers are never reused, even once everything is acknowledged.
	for _, s := range Streams() {
		var seqs []Seq
		for _, e := range all(t, o, s) {
			seqs = append(seqs, e.Seq)
		}
		if err := o.Ack(ctx, s, seqs...); err != nil {
			t.Fatal(err)
		}
	}
	closeStore()
	o, _ = open(t, dir, Options{Clock: clock})
	q, err := o.Append(ctx, StreamAudit, []byte("after"))
	if err != nil || q != Seq(len(want[StreamAudit])+1) {
		t.Fatalf("Append after acking all = %d, %v; want %d", q, err, len(want[StreamAudit])+1)
	}
	checkConsistent(t, o)
}

func TestAck(t *testing.T) {
	for _, tc := range []struct {
		name string
		ack  []Seq
		want []string // remaining payloads of 1..5
	}{
		{"none", nil, []string{"1", "2", "3", "4", "5"}},
		{"middle", []Seq{3}, []string{"1", "2", "4", "5"}},
		{"head and tail", []Seq{1, 5}, []string{"2", "3", "4"}},
		{"missing seqs are ignored", []Seq{2, 99, 0}, []string{"1", "3", "4", "5"}},
		{"duplicates", []Seq{4, 4, 4}, []string{"1", "2", "3", "5"}},
		{"all", []Seq{5, 4, 3, 2, 1}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, _ := open(t, t.TempDir(), Options{})
			for i := 1; i <= 5; i++ {
				if _, err := o.Append(ctx, StreamEvent, []byte(fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			if err := o.Ack(ctx, StreamEvent, tc.ack...); err != nil {
				t.Fatal(err)
			}
			if got := payloads(all(t, o, StreamEvent)); !slices.Equal(got, tc.want) {
				t.Fatalf("remaining %q, want %q", got, tc.want)
			}
			st, err := o.Stats()
			if err != nil {
				t.Fatal(err)
			}
			es := st.Streams[StreamEvent]
			if es.Depth != int64(len(tc.want)) || es.Bytes != int64(len(tc.want)*(1+entryOverhead)) || st.TotalBytes != es.Bytes {
				t.Fatalf("stats %+v", st)
			}
			if (len(tc.want) == 0) != es.Oldest.IsZero() {
				t.Fatalf("Oldest %v with %d entries", es.Oldest, len(tc.want))
			}
			checkConsistent(t, o)
		})
	}
}

func TestDropPolicy(t *testing.T) {
	// Every payload is 68 bytes, so every entry accounts for 100 bytes.
	type step struct {
		s      Stream
		ids    []string // appended in one AppendBatch
		budget int64    // if ids is nil: reopen with this budget
	}
	add := func(s Stream, prefix string, n int) (steps []step) {
		for i := 1; i <= n; i++ {
			steps = append(steps, step{s: s, ids: []string{fmt.Sprintf("%s%d", prefix, i)}})
		}
		return steps
	}
	seq := func(parts ...[]step) []step { return slices.Concat(parts...) }
	ids := func(prefix string, from, to int) string {
		var l []string
		for i := from; i <= to; i++ {
			l = append(l, fmt.Sprintf("%s%d", prefix, i))
		}
		return strings.Join(l, " ")
	}
	T, E, C, F, A := StreamTelemetry, StreamEvent, StreamCommandResult, StreamConfig, StreamAudit
	for _, tc := range []struct {
		name    string
		budget  int64
		steps   []step
		want    map[Stream]string // remaining ids, space separated
		dropped map[Stream]int64
	}{
		{"telemetry first", 1000,
			seq(add(A, "a", 3), add(E, "e", 3), add(T, "t", 4), add(E, "x", 2)),
			map[Stream]string{A: "a1 a2 a3", E: "e1 e2 e3 x1 x2", T: "t3 t4"},
			map[Stream]int64{T: 2}},
		{"then events", 1000,
			seq(add(A, "a", 3), add(E, "e", 2), add(T, "t", 5), add(F, "f", 7)),
			map[Stream]string{A: "a1 a2 a3", F: "f1 f2 f3 f4 f5 f6 f7"},
			map[Stream]int64{T: 5, E: 2}},
		{"command results and config reports by age", 1000,
			seq(add(A, "a", 4), add(C, "c", 1), add(F, "f", 1), add(C, "c", 2)[1:], add(F, "f", 2)[1:], add(T, "t", 2), add(A, "x", 4)),
			map[Stream]string{A: "a1 a2 a3 a4 x1 x2 x3 x4", C: "c2", F: "f2"},
			map[Stream]int64{T: 2, C: 1, F: 1}},
		{"audit last, displaced by one entry at most", 1000,
			seq(add(A, "a", 10), add(T, "t", 3), add(E, "e", 1)),
			map[Stream]string{A: ids("a", 2, 10), E: "e1"},
			map[Stream]int64{A: 1, T: 3}},
		{"own stream's oldest", 1000,
			seq(add(T, "t", 12)),
			map[Stream]string{T: ids("t", 3, 12)},
			map[Stream]int64{T: 2}},
		{"a batch never drops itself", 1000,
			seq(add(T, "t", 10), []step{{s: T, ids: []string{"b1", "b2", "b3"}}}),
			map[Stream]string{T: ids("t", 4, 10) + " b1 b2 b3"},
			map[Stream]int64{T: 3}},
		{"budget lowered across reopen; counters persist", 2000,
			seq(add(T, "t", 15), add(A, "a", 5), []step{{budget: 1000}}, add(E, "e", 1), []step{{budget: 1000}}),
			map[Stream]string{T: "t12 t13 t14 t15", A: "a1 a2 a3 a4 a5", E: "e1"},
			map[Stream]int64{T: 11}},
		{"unlimited", 0,
			seq(add(T, "t", 30)),
			map[Stream]string{T: ids("t", 1, 30)},
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			clock := tickClock()
			budget := tc.budget
			o, closeStore := open(t, dir, Options{BudgetBytes: budget, Clock: clock})
			for _, st := range tc.steps {
				if st.ids == nil {
					closeStore()
					budget = st.budget
					o, closeStore = open(t, dir, Options{BudgetBytes: budget, Clock: clock})
					continue
				}
				var ps [][]byte
				for _, id := range st.ids {
					ps = append(ps, fmt.Appendf(nil, "%-68s", id))
				}
				if _, err := o.AppendBatch(ctx, st.s, ps...); err != nil {
					t.Fatal(err)
				}
			}
			stats, err := o.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if budget > 0 && stats.TotalBytes > budget {
				t.Errorf("total %d over budget %d", stats.TotalBytes, budget)
			}
			for _, s := range Streams() {
				var got []string
				for _, p := range payloads(all(t, o, s)) {
					got = append(got, strings.TrimSpace(p))
				}
				want := strings.Fields(tc.want[s])
				if !slices.Equal(got, want) {
					t.Errorf("%s: remaining %q, want %q", s, got, want)
				}
				ss := stats.Streams[s]
				if ss.Dropped != tc.dropped[s] || ss.Depth != int64(len(want)) || ss.Bytes != 100*int64(len(want)) {
					t.Errorf("%s: stats %+v, want %d dropped, %d deep", s, ss, tc.dropped[s], len(want))
				}
			}
			checkConsistent(t, o)
		})
	}
}

func TestTooLarge(t *testing.T) {
	big := func(n int) []byte { return make([]byte, n) }
	for _, tc := range []struct {
		name     string
		budget   int64
		s        Stream
		payloads [][]byte
		wantErr  error
	}{
		{"exactly the budget", 1000, StreamTelemetry, [][]byte{big(1000 - entryOverhead)}, nil},
		{"one byte over", 1000, StreamTelemetry, [][]byte{big(1001 - entryOverhead)}, ErrTooLarge},
		{"audit too", 1000, StreamAudit, [][]byte{big(5000)}, ErrTooLarge},
		{"batch together over", 1000, StreamEvent, [][]byte{big(500), big(500)}, ErrTooLarge},
		{"unlimited", 0, StreamEvent, [][]byte{big(1 << 20)}, nil},
		{"empty payload", 1000, StreamEvent, [][]byte{nil}, nil},
		{"unknown stream", 0, Stream("bogus"), [][]byte{big(1)}, ErrUnknownStream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, _ := open(t, t.TempDir(), Options{BudgetBytes: tc.budget})
			if _, err := o.Append(ctx, StreamAudit, []byte("keep")); err != nil {
				t.Fatal(err)
			}
			_, err := o.AppendBatch(ctx, tc.s, tc.payloads...)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("AppendBatch: %v, want %v", err, tc.wantErr)
			}
			if err != nil { // a refused append drops nothing
				if got := payloads(all(t, o, StreamAudit)); !slices.Equal(got, []string{"keep"}) {
					t.Fatalf("audit after refused append: %q", got)
				}
			}
			checkConsistent(t, o)
		})
	}
}

func TestConcurrentAppends(t *testing.T) {
	o, _ := open(t, t.TempDir(), Options{})
	const writers, each = 32, 150
	streams := []Stream{StreamTelemetry, StreamEvent, StreamAudit}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() { // readers run alongside the writers
		for {
			select {
			case <-stop:
				return
			case <-o.Notify():
				if _, err := o.Stats(); err != nil {
					t.Error(err)
				}
				if _, err := o.Next(StreamEvent, 0, 50); err != nil {
					t.Error(err)
				}
			}
		}
	}()
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := o.Append(ctx, streams[w%len(streams)], fmt.Appendf(nil, "%d:%d", w, i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	next := make([]int, writers) // the next i expected from each writer
	for _, s := range streams {
		for _, e := range all(t, o, s) {
			var w, i int
			if _, err := fmt.Sscanf(string(e.Payload), "%d:%d", &w, &i); err != nil || streams[w%len(streams)] != s {
				t.Fatalf("%s: unexpected entry %+v", s, e)
			}
			if i != next[w] {
				t.Fatalf("writer %d: got entry %d, want %d (lost, duplicated or reordered)", w, i, next[w])
			}
			next[w]++
		}
	}
	for w, n := range next {
		if n != each {
			t.Errorf("writer %d: %d entries present, want %d", w, n, each)
		}
	}
	checkConsistent(t, o)
}

func TestNotify(t *testing.T) {
	o, _ := open(t, t.TempDir(), Options{})
	select {
	case <-o.Notify():
		t.Fatal("notified before any Append")
	default:
	}
	for range 10 { // nobody listens: must not block
		if _, err := o.Append(ctx, StreamEvent, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-o.Notify():
	default:
		t.Fatal("no notification after Append")
	}
	select {
	case <-o.Notify():
		t.Fatal("notifications did not coalesce")
	default:
	}
	o.Ack(ctx, StreamEvent, 1)
	if _, err := o.AppendBatch(ctx, StreamEvent); err != nil {
		t.Fatal(err)
	}
	select {
	case <-o.Notify():
		t.Fatal("notified without a new entry")
	default:
	}
}

func TestStatsAge(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	o, _ := open(t, t.TempDir(), Options{Clock: func() time.Time { return now }})
	o.Append(ctx, StreamConfig, []byte("old"))
	now = now.Add(90 * time.Second)
	o.Append(ctx, StreamConfig, []byte("new"))
	st, err := o.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Streams[StreamConfig]; c.Depth != 2 || c.Age != 90*time.Second || !c.Oldest.Equal(now.Add(-90*time.Second)) {
		t.Fatalf("config stats %+v", c)
	}
	if a := st.Streams[StreamAudit]; a != (StreamStats{}) {
		t.Fatalf("empty audit stats %+v", a)
	}
}

func TestOpenRepairsStats(t *testing.T) {
	dir := t.TempDir()
	o, closeStore := open(t, dir, Options{})
	for i := range 20 {
		o.Append(ctx, StreamEvent, make([]byte, i))
	}
	want, _ := o.Stats()
	o.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(topBucket)).Put(statsKey(StreamEvent), []byte("junk"))
	})
	closeStore()
	o, _ = open(t, dir, Options{})
	got, err := o.Stats()
	if err != nil || got.Streams[StreamEvent].Depth != 20 || got.Streams[StreamEvent].Bytes != want.Streams[StreamEvent].Bytes {
		t.Fatalf("after repair: %+v, %v; want %+v", got.Streams[StreamEvent], err, want.Streams[StreamEvent])
	}
	checkConsistent(t, o)
}
