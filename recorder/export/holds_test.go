package export

import (
	"testing"
	"time"
)

func TestHolds(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	var h Holds
	h.Add("e1", "door", t0, t0.Add(time.Minute))
	for _, tc := range []struct {
		camera   string
		from, to time.Duration
		want     bool
	}{
		{"door", -time.Minute, 0, false},                   // ends where the hold starts
		{"door", -time.Minute, time.Second, true},          // reaches into it
		{"door", 30 * time.Second, 90 * time.Second, true}, // starts inside
		{"door", time.Minute, 2 * time.Minute, false},      // starts where it ends
		{"yard", 0, time.Minute, false},                    // other camera
	} {
		if got := h.Held(tc.camera, t0.Add(tc.from), t0.Add(tc.to)); got != tc.want {
			t.Errorf("%s %v..%v: held %v, want %v", tc.camera, tc.from, tc.to, got, tc.want)
		}
	}
	h.Release("e1")
	if h.Held("door", t0, t0.Add(time.Minute)) {
		t.Error("held after release")
	}
}
