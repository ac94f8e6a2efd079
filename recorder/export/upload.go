package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Source writes the clip from its first byte to w. It must write the same
// bytes every time it is called (the upload resumes in the middle of a
// regenerated stream).
type Source func(ctx context.Context, w io.Writer) error

// Clock is the time the uploader waits on between attempts.
type Clock interface {
	Now() time.Time
	// After is time.After.
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time                         { return time.Now() }
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Errors of an upload.
var (
	// ErrChanged: the regenerated clip is not the one whose length and
	// hash were taken (a segment went missing); the upload stopped before
	// its last byte, so the server has no complete, wrong file.
	ErrChanged = errors.New("export: the clip changed between attempts")
	// ErrSession: the server no longer knows the upload session (404/410)
	// or refused a request outright (other 4xx); retrying cannot help.
	ErrSession = errors.New("export: upload session refused")
)

// Uploader sends a clip to a resumable upload session in the manner of a
// Google Cloud Storage resumable upload: the URL is the session; a PUT
// with "Content-Range: bytes */N" and no body asks how much arrived (308
// with "Range: bytes=0-K", or no Range for nothing; 200/201 when the object
// is complete); chunks are PUT with "Content-Range: bytes A-B/N" and get 308
// until the last, which gets 200 or 201. Failed attempts are retried with
// exponential backoff and full jitter; every attempt asks the server where
// to go on, regenerates the clip and skips what the server has.
type Uploader struct {
	// Client sends the requests; nil = http.DefaultClient. Redirects are
	// never followed (a 308 is the protocol's "go on").
	Client *http.Client
	// ChunkSize is the body of one PUT; 0 = DefaultChunkSize. GCS wants a
	// multiple of 256 KiB.
	ChunkSize int64
	// Backoff is the first retry's wait bound (0 = 1 s), doubled per failed
	// attempt in a row up to MaxBackoff (0 = 5 min); the wait is uniform
	// in [0, bound).
	Backoff, MaxBackoff time.Duration
	// GiveUp ends the retries once this long has passed since the upload
	// began (Clip.Began) without it finishing; 0 = never (until ctx ends).
	GiveUp time.Duration
	// StallTimeout ends an attempt (retried) when the server takes no
	// byte of a chunk and sends no answer for this long; 0 =
	// DefaultStallTimeout. Real time, not Clock: it guards the network.
	StallTimeout time.Duration
	Clock        Clock // nil = SystemClock
	// Log gets each failed attempt (warn) with the URL's scheme, host and
	// path only: signed URLs carry their secret in the query.
	Log *slog.Logger
}

// DefaultChunkSize is 8 MiB, 32 × 256 KiB.
const DefaultChunkSize = 8 << 20

// DefaultStallTimeout: two minutes without progress is a dead session.
const DefaultStallTimeout = 2 * time.Minute

// Clip is what one upload sends.
type Clip struct {
	URL    string
	Size   int64    // bytes the source writes
	SHA256 [32]byte // of those bytes
	Source Source
	// Progress, if set, is called with the bytes the server holds, after
	// each answer that says so.
	Progress func(have int64)
	// Began is when the upload was first asked for (GiveUp counts from
	// it, across restarts); zero = when Upload is called.
	Began time.Time
}

// Measure runs src once and returns its length and SHA-256, the figures an
// upload checks the regenerated clip against.
func Measure(ctx context.Context, src Source) (int64, [32]byte, error) {
	h := sha256.New()
	cw := &countWriter{w: h}
	err := src(ctx, cw)
	var sum [32]byte
	h.Sum(sum[:0])
	return cw.n, sum, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Redact is a URL as it may be logged: scheme, host and path, no query,
// fragment or user info.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// Upload sends c until the server has all of it, ctx ends, GiveUp passes,
// or an error retrying cannot fix (ErrURL, ErrSession, ErrChanged).
func (u *Uploader) Upload(ctx context.Context, c Clip) error {
	if err := CheckURL(c.URL); err != nil {
		return err
	}
	if c.Size <= 0 {
		return fmt.Errorf("export: empty clip")
	}
	clock := u.Clock
	if clock == nil {
		clock = SystemClock{}
	}
	log := u.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("url", Redact(c.URL))
	began := c.Began
	if began.IsZero() {
		began = clock.Now()
	}
	var fails int
	for {
		progressed, err := u.attempt(ctx, c)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if errors.Is(err, ErrSession) || errors.Is(err, ErrChanged) || errors.Is(err, ErrURL) {
			return err
		}
		if progressed {
			fails = 0
		}
		fails++
		if u.GiveUp > 0 && clock.Now().Sub(began) > u.GiveUp {
			return fmt.Errorf("export: gave up after %v: %w", u.GiveUp, err)
		}
		wait := u.backoff(fails)
		log.Warn("upload attempt failed; retrying", "err", err, "attempt", fails, "wait", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-clock.After(wait):
		}
	}
}

func (u *Uploader) backoff(fails int) time.Duration {
	b, m := u.Backoff, u.MaxBackoff
	if b <= 0 {
		b = time.Second
	}
	if m <= 0 {
		m = 5 * time.Minute
	}
	bound := b
	for i := 1; i < fails && bound < m; i++ {
		bound *= 2
	}
	bound = min(bound, m)
	return time.Duration(rand.Int64N(int64(bound)) + 1)
}

func (u *Uploader) client() *http.Client {
	c := http.DefaultClient
	if u.Client != nil {
		c = u.Client
	}
	cc := *c
	cc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cc
}

// attempt asks the server what it has and sends the rest; progressed
// reports that the server holds more than it did at the start.
func (u *Uploader) attempt(ctx context.Context, c Clip) (progressed bool, err error) {
	client := u.client()
	have, done, err := u.put(ctx, client, c, "bytes */"+strconv.FormatInt(c.Size, 10), nil, 0)
	if err != nil || done {
		return false, err
	}
	start := have
	if c.Progress != nil {
		c.Progress(have)
	}
	if have >= c.Size {
		return false, fmt.Errorf("%w: the server holds all %d bytes but does not finish", ErrSession, c.Size)
	}

	// Regenerate the clip into a pipe, hashing all of it, and skip what
	// the server holds.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	defer pr.Close()
	go func() { pw.CloseWithError(c.Source(ctx, pw)) }()
	h := sha256.New()
	src := io.TeeReader(pr, h)
	if _, err := io.CopyN(io.Discard, src, have); err != nil {
		return false, fmt.Errorf("%w: regenerating: %v", ErrChanged, err)
	}
	chunk := u.ChunkSize
	if chunk <= 0 {
		chunk = DefaultChunkSize
	}
	for have < c.Size {
		n := min(chunk, c.Size-have)
		var body io.Reader = io.LimitReader(src, n)
		if have+n == c.Size {
			body = &lastChunk{r: src, pr: pr, left: n, h: h, want: c.SHA256}
		}
		rng := fmt.Sprintf("bytes %d-%d/%d", have, have+n-1, c.Size)
		next, done, err := u.put(ctx, client, c, rng, body, n)
		if err != nil {
			if lc, ok := body.(*lastChunk); ok && lc.err != nil {
				return have > start, lc.err
			}
			return have > start, err
		}
		if done {
			if c.Progress != nil {
				c.Progress(c.Size)
			}
			return true, nil
		}
		if c.Progress != nil {
			c.Progress(next)
		}
		if next != have+n {
			// The server kept less (or claims more) than was sent: the pipe
			// cannot rewind, so start a new attempt from what it says.
			return next > start, fmt.Errorf("export: server holds %d bytes after a chunk to %d", next, have+n)
		}
		have = next
	}
	return true, fmt.Errorf("%w: the server did not finish after the last byte", ErrSession)
}

// put sends one PUT; have is the server's byte count from a 308's Range,
// done a 200/201.
func (u *Uploader) put(ctx context.Context, client *http.Client, c Clip, contentRange string, body io.Reader, n int64) (have int64, done bool, err error) {
	// A server that stops reading, or never answers, is given up on
	// after StallTimeout without a byte taken or an answer.
	stall := u.StallTimeout
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(stall, func() { cancel(errStalled) })
	defer timer.Stop()
	if body != nil {
		body = &stallReader{r: body, t: timer, d: stall}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.URL, body)
	if err != nil {
		return 0, false, fmt.Errorf("%w: %v", ErrURL, err)
	}
	req.ContentLength = n
	if body == nil {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Range", contentRange)
	req.Header.Set("Content-Type", "video/mp4")
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error prints the URL, query and all
		}
		if context.Cause(ctx) == errStalled {
			err = fmt.Errorf("%w for %v", errStalled, stall)
		}
		return 0, false, fmt.Errorf("export: PUT: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch code := resp.StatusCode; {
	case code == http.StatusOK || code == http.StatusCreated:
		return c.Size, true, nil
	case code == http.StatusPermanentRedirect:
		have, err := parseRange(resp.Header.Get("Range"))
		if err != nil {
			return 0, false, fmt.Errorf("%w: %v", ErrSession, err)
		}
		return have, false, nil
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return 0, false, fmt.Errorf("export: server: %s", resp.Status)
	default:
		return 0, false, fmt.Errorf("%w: %s", ErrSession, resp.Status)
	}
}

var errStalled = errors.New("no progress")

// stallReader pushes the stall timer back on every read.
type stallReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.t.Reset(s.d)
	}
	return n, err
}

// parseRange reads a 308's "Range: bytes=0-K" as K+1 bytes held; no
// header means none.
func parseRange(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	r, ok := strings.CutPrefix(s, "bytes=0-")
	k, err := strconv.ParseInt(r, 10, 64)
	if !ok || err != nil || k < 0 || k == math.MaxInt64 {
		return 0, fmt.Errorf("bad Range %q", s)
	}
	return k + 1, nil
}

// lastChunk is the final chunk's body: it holds back the clip's last byte
// until the whole regenerated stream matched the measured hash and the
// source ended there, so a changed clip never completes on the server.
type lastChunk struct {
	r    io.Reader // tee into h
	pr   *io.PipeReader
	left int64
	h    hash.Hash
	want [32]byte
	err  error
}

func (l *lastChunk) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if l.left == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if l.left > 1 {
		n, err := l.r.Read(p[:min(int64(len(p)), l.left-1)])
		l.left -= int64(n)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			l.err = fmt.Errorf("%w: %v", ErrChanged, err)
		}
		return n, l.err
	}
	var last [1]byte
	if _, err := io.ReadFull(l.r, last[:]); err != nil {
		l.err = fmt.Errorf("%w: %v", ErrChanged, err)
		return 0, l.err
	}
	var sum [32]byte
	l.h.Sum(sum[:0])
	var extra [1]byte
	if n, err := io.ReadFull(l.pr, extra[:]); n > 0 || err != io.EOF || !bytes.Equal(sum[:], l.want[:]) {
		l.err = fmt.Errorf("%w: SHA-256 or length differs from the measured clip", ErrChanged)
		return 0, l.err
	}
	p[0] = last[0]
	l.left = 0
	return 1, nil
}
