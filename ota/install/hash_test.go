package install

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
)

func TestHashPipelined(t *testing.T) {
	data := make([]byte, 7<<19+3) // 3.5 MiB and a bit
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, n := range []int{0, 1, 1 << 20, 1<<20 + 1, 3 << 20, len(data)} {
		sum, got, err := hashPipelined(bytes.NewReader(data[:n]))
		if err != nil || got != int64(n) || sum != sha256.Sum256(data[:n]) {
			t.Errorf("%d bytes: n %d, err %v, sum ok %v", n, got, err, sum == sha256.Sum256(data[:n]))
		}
	}
	boom := errors.New("disk error")
	if _, _, err := hashPipelined(io.MultiReader(bytes.NewReader(data[:3<<20]), iotestErr{boom})); !errors.Is(err, boom) {
		t.Errorf("a read error: %v", err)
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }
