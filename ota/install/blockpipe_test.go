package install

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestBlockPipe: every byte arrives in order whatever the write and read
// sizes, and an error at either end reaches the other.
func TestBlockPipe(t *testing.T) {
	data := make([]byte, 5<<20+123)
	for i := range data {
		data[i] = byte(i*7 + i>>13)
	}
	for _, tc := range []struct{ block, depth, write, read int }{
		{1 << 20, 4, 16 << 10, 32 << 10},
		{1 << 20, 1, 1, 1 << 20},
		{4096, 2, 10000, 3},
		{1 << 20, 4, len(data), 32 << 10},
	} {
		p := newBlockPipe(tc.block, tc.depth)
		go func() {
			for b := data; len(b) > 0; {
				k := min(tc.write, len(b))
				if _, err := p.Write(b[:k]); err != nil {
					t.Error(err)
					return
				}
				b = b[k:]
			}
			p.CloseWithError(nil)
		}()
		got, err := io.ReadAll(io.LimitReader(readerOf{p}, int64(len(data))+1))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%+v: %d bytes, err %v", tc, len(got), err)
		}
	}

	boom := errors.New("fetch failed")
	p := newBlockPipe(1<<10, 2)
	go func() { p.Write(data[:3000]); p.CloseWithError(boom) }()
	got, err := io.ReadAll(p)
	if !errors.Is(err, boom) || !bytes.Equal(got, data[:3000]) {
		t.Errorf("writer's error: %d bytes, %v", len(got), err)
	}

	gone := errors.New("upload failed")
	p = newBlockPipe(1<<10, 2)
	p.CloseRead(gone)
	if _, err := p.Write(data); !errors.Is(err, gone) {
		t.Errorf("write after the reader closed: %v", err)
	}
	if _, err := p.Write(data[:10]); !errors.Is(err, gone) {
		t.Errorf("second write: %v", err)
	}
}

// readerOf hides blockPipe's other methods from io.ReadAll.
type readerOf struct{ r io.Reader }

func (r readerOf) Read(b []byte) (int, error) { return r.r.Read(b) }

// TestWriteback: following a stream into a file neither blocks the stream
// nor changes what is written.
func TestWriteback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slot")
	data := bytes.Repeat([]byte("0123456789abcdef"), (40<<20)/16)
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	wb := newFileWriteback(f)
	for off := 0; off < len(data); off += 1 << 20 {
		out.Write(data[off : off+1<<20])
		wb.Advance(int64(off + 1<<20))
	}
	if err := wb.Close(); err != nil {
		t.Fatal(err)
	}
	out.Sync()
	out.Close()
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, data) {
		t.Fatal("file differs")
	}
	var g Gokrazy
	if _, err := g.Writeback("boot"); err == nil {
		t.Error("writeback of the boot partition accepted")
	}
}
