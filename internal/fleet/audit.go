package fleet

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/outpost-gw/outpost/internal/audit"
)

// The fleet keeps every box's audit entries as it receives them, one JSON
// line each, in audit/<device>.jsonl; duplicates (a resend) are dropped when
// read.

// AppendAudit stores one received entry.
func (f *Fleet) AppendAudit(device string, e audit.Entry) error {
	if err := checkID(device); err != nil {
		return err
	}
	dir := filepath.Join(f.Dir, "audit")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	fh, err := os.OpenFile(filepath.Join(dir, device+".jsonl"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := fh.Write(append(b, '\n')); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

// AuditReport is a box's audit trail as the fleet holds it.
type AuditReport struct {
	Entries []audit.Entry
	// Problems lists breaks: a changed entry, a missing one, a fork.
	Problems []string
}

// Audit reads a box's entries, in order, and verifies the chain.
func (f *Fleet) Audit(device string) (AuditReport, error) {
	var r AuditReport
	if err := checkID(device); err != nil {
		return r, err
	}
	b, err := os.ReadFile(filepath.Join(f.Dir, "audit", device+".jsonl"))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	bySeq := map[uint64]audit.Entry{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var e audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("line %d unreadable: %v", line, err))
			continue
		}
		if prev, ok := bySeq[e.Seq]; ok && !bytes.Equal(prev.Hash, e.Hash) {
			r.Problems = append(r.Problems, fmt.Sprintf("entry %d received twice with different content", e.Seq))
			continue
		}
		bySeq[e.Seq] = e
	}
	for _, e := range bySeq {
		r.Entries = append(r.Entries, e)
	}
	sort.Slice(r.Entries, func(i, j int) bool { return r.Entries[i].Seq < r.Entries[j].Seq })
	for i, e := range r.Entries {
		if !bytes.Equal(e.Hash, audit.ChainHash(e)) {
			r.Problems = append(r.Problems, fmt.Sprintf("entry %d: content does not match its hash", e.Seq))
		}
		switch {
		case i == 0 && e.Seq != 1:
			r.Problems = append(r.Problems, fmt.Sprintf("entries 1..%d missing", e.Seq-1))
		case i > 0 && e.Seq != r.Entries[i-1].Seq+1:
			r.Problems = append(r.Problems, fmt.Sprintf("entries %d..%d missing", r.Entries[i-1].Seq+1, e.Seq-1))
		case i > 0 && !bytes.Equal(e.Prev, r.Entries[i-1].Hash):
			r.Problems = append(r.Problems, fmt.Sprintf("entry %d does not follow entry %d", e.Seq, e.Seq-1))
		}
	}
	return r, nil
}
