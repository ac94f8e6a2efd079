// Package fetch downloads one signed artifact of a release into a stream
// (the caller streams it into the inactive root partition), trusting nothing
// the server says beyond what the manifest signed.
//
// Fetch writes at most the signed length, hashes while it streams and never
// holds the artifact in memory. A dropped connection is resumed with a Range
// request from the byte after the last one written; the SHA-256 state simply
// continues, so nothing is re-read. Resuming is limited to one Fetch call on
// purpose: gokrazy's updater takes a partition as one HTTP stream that cannot
// be continued after a restart, so after a reboot or a daemon restart the
// install starts again from byte 0.
package fetch

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-gw/outpost/ota/manifest"
)

// Reasons a download is abandoned that point at a hostile or broken mirror.
// Other errors (HTTP status, network, ctx, the writer) wrap their cause.
var (
	ErrTooLong = errors.New("ota fetch: server sends more than the signed length (endless data)")
	ErrTooSlow = errors.New("ota fetch: transfer below the minimum speed (slow retrieval)")
	ErrHash    = errors.New("ota fetch: sha256 of the signed length does not match the manifest")
)

// Options tune Fetch; the zero value is what a box uses.
type Options struct {
	// MinSpeed in bytes/s, averaged over SpeedWindow, including time spent
	// reconnecting and backing off (default 16 KiB/s over 30 s). In a window
	// that starts with fewer bytes missing than MinSpeed×SpeedWindow, those
	// bytes must arrive within it.
	MinSpeed    int64
	SpeedWindow time.Duration
	// Retries is how many attempts in a row may end without a new byte
	// before Fetch gives up (default 5). An attempt that made progress
	// resets the count; MinSpeed bounds the total time.
	Retries int
	// Backoff is the pause after the first failed attempt (default 1 s),
	// doubling with jitter up to 30 s.
	Backoff time.Duration
	// Progress, if set, is called after every write with the bytes written
	// so far (at most every 256 KiB).
	Progress func(written int64)
	Log      *slog.Logger // nil discards
}

const (
	bufSize = 32 << 10
	// blockSize bytes are read before they are passed on; hashDepth
	// blocks at most wait for the hash.
	blockSize  = 256 << 10
	hashDepth  = 4
	maxBackoff = 30 * time.Second
	// probeWait bounds the wait for the body to end once every signed byte
	// is in and the server did not declare a length.
	probeWait = 2 * time.Second
)

// Fetch GETs art.URL with client (nil: http.DefaultClient; it must not set a
// Client.Timeout, which would cut long downloads: MinSpeed is the timeout)
// and writes exactly art.Length bytes to w as they arrive. It returns nil
// only if those bytes hash to art.SHA256. On any error w has received a
// prefix of at most art.Length bytes that must be discarded — including on
// ErrHash, when all of them were written: the target partition then holds
// garbage and must never be booted.
func Fetch(ctx context.Context, client *http.Client, art manifest.Artifact, w io.Writer, o Options) error {
	if client == nil {
		client = http.DefaultClient
	}
	o = o.withDefaults()
	if u, err := url.Parse(art.URL); err != nil || u.Scheme != "https" || art.Length <= 0 {
		return fmt.Errorf("fetching %s: not a signed artifact (url %q, length %d)", art.Name, art.URL, art.Length)
	}
	f := &fetcher{client: client, art: art, w: w, o: o, h: newHasher(), buf: make([]byte, bufSize)}
	defer f.h.stop()

	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil)
	wg.Go(func() { f.watch(ctx, cancel) })

	pause, failures := o.Backoff, 0
	for f.written.Load() < art.Length {
		before := f.written.Load()
		retry, err := f.attempt(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		if !retry || ctx.Err() != nil {
			return fmt.Errorf("fetching %s at byte %d of %d: %w", art.Name, f.written.Load(), art.Length, err)
		}
		if f.written.Load() > before {
			pause, failures = o.Backoff, 0
		} else if failures++; failures >= o.Retries {
			return fmt.Errorf("fetching %s: giving up after %d attempts without progress at byte %d of %d: %w", art.Name, failures, f.written.Load(), art.Length, err)
		}
		wait := pause/2 + rand.N(pause/2+1)
		o.Log.Info("ota fetch: retrying", "artifact", art.Name, "written", f.written.Load(), "length", art.Length, "pause", wait, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("fetching %s at byte %d of %d: %w", art.Name, f.written.Load(), art.Length, context.Cause(ctx))
		case <-time.After(wait):
		}
		pause = min(2*pause, maxBackoff)
	}
	if sum := f.h.sum(); sum != art.SHA256 {
		return fmt.Errorf("%w: %s has %s, signed %s", ErrHash, art.Name, sum, art.SHA256)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.MinSpeed <= 0 {
		o.MinSpeed = 16 << 10
	}
	if o.SpeedWindow <= 0 {
		o.SpeedWindow = 30 * time.Second
	}
	if o.Retries <= 0 {
		o.Retries = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

type fetcher struct {
	client *http.Client
	art    manifest.Artifact
	w      io.Writer
	o      Options
	h      *hasher
	buf    []byte // the probe past the signed length
	// written counts bytes passed to w (and h); received counts every byte
	// read from a body, including a prefix skipped when a server ignores
	// Range. The speed watch reads both.
	written, received atomic.Int64
}

// attempt makes one request from the current offset and streams what it
// gets. retry says whether another attempt may help.
func (f *fetcher) attempt(ctx context.Context) (retry bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	off, length := f.written.Load(), f.art.Length
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.art.URL, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, length-1))
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := f.client.Do(req)
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()

	skip := int64(0)
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, end, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		switch {
		case err != nil:
			return true, err
		case end >= length || total > length:
			return false, fmt.Errorf("%w: Content-Range %q, signed length %d", ErrTooLong, resp.Header.Get("Content-Range"), length)
		case total >= 0 && total < length:
			return false, fmt.Errorf("server has %d bytes, %d signed", total, length)
		case start != off:
			return true, fmt.Errorf("asked for bytes from %d, got Content-Range %q", off, resp.Header.Get("Content-Range"))
		}
	case http.StatusOK:
		skip = off // the server ignored Range: read past what is written
	case http.StatusRequestedRangeNotSatisfiable:
		return false, fmt.Errorf("server has fewer than the %d signed bytes (%s)", length, resp.Status)
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true, fmt.Errorf("GET: %s", resp.Status)
	default:
		return resp.StatusCode >= 500, fmt.Errorf("GET: %s", resp.Status)
	}
	if resp.ContentLength > length-off+skip {
		return false, fmt.Errorf("%w: Content-Length %d, %d bytes missing", ErrTooLong, resp.ContentLength, length-off)
	}
	if skip > 0 {
		n, err := io.CopyN(io.Discard, countingReader{resp.Body, &f.received}, skip)
		if err != nil {
			return true, fmt.Errorf("skipping %d of %d bytes already written: %w", n, skip, err)
		}
	}
	for f.written.Load() < length {
		// Fill a block (a TLS body gives at most one 16 KB record a
		// read), pass it on and hash it beside the next reads.
		blk := f.h.block()
		want := min(int64(cap(blk)), length-f.written.Load())
		var rerr error
		for int64(len(blk)) < want && rerr == nil {
			var n int
			n, rerr = resp.Body.Read(blk[len(blk):want])
			blk = blk[:len(blk)+n]
			f.received.Add(int64(n))
		}
		if len(blk) > 0 {
			if _, err := f.w.Write(blk); err != nil {
				f.h.give(blk[:0])
				return false, fmt.Errorf("writing: %w", err)
			}
			f.h.add(blk)
			w := f.written.Add(int64(len(blk)))
			if f.o.Progress != nil {
				f.o.Progress(w)
			}
		} else {
			f.h.give(blk)
		}
		if rerr == io.EOF && f.written.Load() < length {
			return true, fmt.Errorf("body ended early: %w", io.ErrUnexpectedEOF)
		}
		if rerr != nil && rerr != io.EOF {
			return true, rerr
		}
	}
	// Every signed byte is in; the body must end here. With no declared
	// length, wait a little for the end rather than for the speed watch.
	if resp.ContentLength < 0 {
		t := time.AfterFunc(probeWait, cancel)
		defer t.Stop()
	}
	if n, _ := resp.Body.Read(f.buf[:1]); n > 0 {
		return false, fmt.Errorf("%w: more data after byte %d", ErrTooLong, length)
	}
	return false, nil
}

// watch cancels ctx with ErrTooSlow when fewer bytes than MinSpeed asks for
// arrived over the last SpeedWindow.
func (f *fetcher) watch(ctx context.Context, cancel context.CancelCauseFunc) {
	window := f.o.SpeedWindow
	t := time.NewTicker(max(window/10, time.Millisecond))
	defer t.Stop()
	type sample struct {
		at                time.Time
		received, written int64
	}
	hist := []sample{{at: time.Now()}}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cur := sample{now, f.received.Load(), f.written.Load()}
			hist = append(hist, cur)
			for len(hist) > 1 && now.Sub(hist[1].at) >= window {
				hist = hist[1:]
			}
			base := hist[0]
			span := now.Sub(base.at)
			if span < window {
				continue
			}
			need := min(int64(float64(f.o.MinSpeed)*span.Seconds()), f.art.Length-base.written)
			if got := cur.received - base.received; got < need {
				cancel(fmt.Errorf("%w: %d bytes in the last %v, minimum %d B/s", ErrTooSlow, got, span.Round(time.Millisecond), f.o.MinSpeed))
				return
			}
		}
	}
}

// hasher hashes the written blocks in a goroutine of its own, in order,
// beside the reads of the next ones: the SHA-256 and the TLS reads then take
// a core each instead of turns on one.
type hasher struct {
	h    hash.Hash
	in   chan []byte
	free chan []byte
	done chan struct{}
	once bool // stopped
}

func newHasher() *hasher {
	x := &hasher{h: sha256.New(), in: make(chan []byte, hashDepth), free: make(chan []byte, hashDepth), done: make(chan struct{})}
	for range hashDepth {
		x.free <- make([]byte, 0, blockSize)
	}
	go func() {
		defer close(x.done)
		for b := range x.in {
			x.h.Write(b)
			x.free <- b[:0]
		}
	}()
	return x
}

func (x *hasher) block() []byte { return <-x.free }
func (x *hasher) give(b []byte) { x.free <- b[:0] }
func (x *hasher) add(b []byte)  { x.in <- b }

// stop waits for every added block to be hashed.
func (x *hasher) stop() {
	if !x.once {
		x.once = true
		close(x.in)
		<-x.done
	}
}

func (x *hasher) sum() manifest.Digest {
	x.stop()
	return manifest.Digest(x.h.Sum(nil))
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// parseContentRange parses "bytes start-end/total"; total is -1 for "*".
func parseContentRange(s string) (start, end, total int64, err error) {
	bad := fmt.Errorf("bad Content-Range %q", s)
	rng, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rng, "/")
	a, b, ok2 := strings.Cut(rng, "-")
	if !ok || !ok2 {
		return 0, 0, 0, bad
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	total = -1
	var err3 error
	if tot != "*" {
		total, err3 = strconv.ParseInt(tot, 10, 64)
	}
	if err1 != nil || err2 != nil || err3 != nil || start < 0 || end < start || (total >= 0 && end >= total) {
		return 0, 0, 0, bad
	}
	return start, end, total, nil
}
