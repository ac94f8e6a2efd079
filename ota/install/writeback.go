package install

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Writebacker is an optional Target that can push what has been streamed
// so far on to the medium while the stream goes on.
//
// gokrazy writes the slot through the page cache and fsyncs at the end. On
// a box with a few GB of RAM the kernel starts writing back only once
// hundreds of MB are dirty, so most of an image would sit in memory until
// that fsync, and the medium would idle while the download runs and then
// write it all at the end: the install would take the download plus the
// write instead of the longer of the two. The installer therefore tells
// the kernel, as the bytes go by, to write them out (sync_file_range on the
// same device), and drops them from the cache once they are on the medium,
// so an install does not push out the cache of the recordings either.
type Writebacker interface {
	Writeback(dest string) (Writeback, error)
}

// Writeback follows a stream into a slot.
type Writeback interface {
	// Advance says the stream has passed byte n (it does not block).
	Advance(n int64)
	// Close stops following; the target's own fsync still ends the write.
	Close() error
}

var _ Writebacker = (*Gokrazy)(nil)

// Writeback opens the partition gokrazy writes ("root" only) to follow the
// stream into it.
func (g *Gokrazy) Writeback(dest string) (Writeback, error) {
	f, err := g.openSlot("writeback of", dest)
	if err != nil {
		return nil, err
	}
	return newFileWriteback(f), nil
}

// The writeback follows the stream in steps: bytes more than wbLag behind
// the stream (what may still sit in gokrazy's buffers) are started in
// wbStep pieces; a piece a step older is waited for and dropped.
const (
	wbStep = 8 << 20
	wbLag  = 4 << 20
)

type fileWriteback struct {
	f    *os.File
	next chan int64 // latest position, capacity 1
	done chan struct{}
	once sync.Once
}

func newFileWriteback(f *os.File) *fileWriteback {
	w := &fileWriteback{f: f, next: make(chan int64, 1), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *fileWriteback) Advance(n int64) {
	select {
	case w.next <- n:
	default:
		select { // replace the older position not taken yet
		case <-w.next:
		default:
		}
		select {
		case w.next <- n:
		default:
		}
	}
}

func (w *fileWriteback) run() {
	defer close(w.done)
	fd := int(w.f.Fd())
	var started, dropped int64
	for n := range w.next {
		upto := (n - wbLag) / wbStep * wbStep
		for started < upto {
			// Errors only lose the head start: the final fsync
			// reports what matters.
			unix.SyncFileRange(fd, started, wbStep, unix.SYNC_FILE_RANGE_WRITE)
			started += wbStep
			if old := started - 2*wbStep; old >= dropped {
				unix.SyncFileRange(fd, old, wbStep, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
				unix.Fadvise(fd, old, wbStep, unix.FADV_DONTNEED)
				dropped = old + wbStep
			}
		}
	}
}

func (w *fileWriteback) Close() error {
	w.once.Do(func() { close(w.next) })
	<-w.done
	return w.f.Close()
}
