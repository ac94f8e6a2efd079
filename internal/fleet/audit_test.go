package fleet

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/outpost-gw/outpost/internal/audit"
	"github.com/outpost-gw/outpost/internal/store"
)

func TestAuditTrail(t *testing.T) {
	f := newFleet(t)
	st, err := store.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	l, _ := audit.Open(st, nil, nil, nil)
	var es []audit.Entry
	for _, a := range []string{"start", "command ping", "config v2", "start"} {
		e, err := l.Record(context.Background(), "system", a, "", "", "ok")
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	const dev = "op-audit000000000000"
	for _, e := range append(es, es[1]) { // one resent
		if err := f.AppendAudit(dev, e); err != nil {
			t.Fatal(err)
		}
	}
	r, err := f.Audit(dev)
	if err != nil || len(r.Entries) != 4 || len(r.Problems) != 0 {
		t.Fatalf("intact trail: %d entries, problems %v, %v", len(r.Entries), r.Problems, err)
	}
	// A tampered copy and a gap are both reported.
	bad := es[2]
	bad.Result = "denied"
	g := newFleet(t)
	for _, e := range []audit.Entry{es[0], bad, es[3]} {
		g.AppendAudit(dev, e)
	}
	r, _ = g.Audit(dev)
	joined := strings.Join(r.Problems, "; ")
	if !strings.Contains(joined, "entry 3: content does not match") || !strings.Contains(joined, "entries 2..2 missing") {
		t.Errorf("problems = %v", r.Problems)
	}
}
