package install

import (
	"errors"
	"io"
	"sync"
)

// blockPipe is io.Pipe with a few large buffers in between, from the fetch
// (TLS reads, SHA-256) to gokrazy's updater (the PUT to /update/root).
//
// io.Pipe hands each write over only once the reader has taken it all:
// with TLS records of 16 KB, the fetch and the upload then take turns 16 KB
// at a time, and the install runs at the speed of both added up, on one
// core. With depth blocks of size bytes the two run side by side, and the
// handovers come once a block (measured in bench/otainstall: see
// docs/ota.md). At most depth×size bytes are held.
type blockPipe struct {
	free, full chan []byte
	done       chan struct{} // closed by the reader
	doneOnce   sync.Once
	rerr       error // why the reader closed (set before done is closed)
	werr       error // why the writer closed (set before full is closed)
	closed     bool  // the writer has closed (writer side only)

	cur []byte // the block the writer fills
	rd  []byte // what is left of the block the reader drains
	blk []byte // that block, to give back
}

func newBlockPipe(size, depth int) *blockPipe {
	p := &blockPipe{free: make(chan []byte, depth), full: make(chan []byte, depth), done: make(chan struct{})}
	for range depth {
		p.free <- make([]byte, 0, size)
	}
	return p
}

var errPipeWriterClosed = errors.New("install: write after close")

// Write copies b into the blocks, handing each full one over.
func (p *blockPipe) Write(b []byte) (int, error) {
	if p.closed {
		return 0, errPipeWriterClosed
	}
	n := 0
	for len(b) > 0 {
		select {
		case <-p.done:
			return n, p.rerr
		default:
		}
		if p.cur == nil {
			select {
			case p.cur = <-p.free:
			case <-p.done:
				return n, p.rerr
			}
		}
		k := copy(p.cur[len(p.cur):cap(p.cur)], b)
		p.cur, b, n = p.cur[:len(p.cur)+k], b[k:], n+k
		if len(p.cur) == cap(p.cur) {
			if err := p.hand(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (p *blockPipe) hand() error {
	select {
	case p.full <- p.cur:
		p.cur = nil
		return nil
	case <-p.done:
		return p.rerr
	}
}

// CloseWithError ends the writer's side: the reader gets what was written,
// then err (io.EOF for nil).
func (p *blockPipe) CloseWithError(err error) error {
	if p.closed {
		return nil
	}
	p.closed = true
	if len(p.cur) > 0 {
		p.hand() // a closed reader needs nothing more
	}
	if err == nil {
		err = io.EOF
	}
	p.werr = err
	close(p.full)
	return nil
}

// Read takes bytes from the block handed over first.
func (p *blockPipe) Read(b []byte) (int, error) {
	if len(p.rd) == 0 {
		if p.blk != nil {
			p.free <- p.blk[:0] // never blocks: depth blocks in all
			p.blk = nil
		}
		blk, ok := <-p.full
		if !ok {
			return 0, p.werr
		}
		p.rd, p.blk = blk, blk
	}
	n := copy(b, p.rd)
	p.rd = p.rd[n:]
	return n, nil
}

// CloseRead ends the reader's side: the writer's next write fails with err.
func (p *blockPipe) CloseRead(err error) {
	if err == nil {
		err = io.ErrClosedPipe
	}
	p.doneOnce.Do(func() { p.rerr = err; close(p.done) })
}
