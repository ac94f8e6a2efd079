package rollout

import (
	"context"
	"crypto/ed25519"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-gw/outpost/cloudlink/wire"
	"github.com/outpost-gw/outpost/internal/operator"
	"github.com/outpost-gw/outpost/ota/manifest"
)

// fakeOperator answers commands with answer and lets the test deliver
// events as a box would send them.
type fakeOperator struct {
	mu     sync.Mutex
	subs   []func(operator.Message)
	answer func(device string) wire.CommandResult
	sent   map[string]map[string][]byte
	waits  map[string]time.Duration // the timeout each command was sent with
}

func (f *fakeOperator) Command(ctx context.Context, device, name string, args any, timeout time.Duration) (wire.CommandResult, error) {
	f.mu.Lock()
	f.sent[device] = args.(map[string][]byte)
	if f.waits == nil {
		f.waits = map[string]time.Duration{}
	}
	f.waits[device] = timeout
	f.mu.Unlock()
	if name != "update" {
		return wire.CommandResult{Error: "unknown command"}, nil
	}
	return f.answer(device), nil
}

func (f *fakeOperator) Subscribe(fn func(operator.Message)) {
	f.mu.Lock()
	f.subs = append(f.subs, fn)
	f.mu.Unlock()
}

func (f *fakeOperator) event(t *testing.T, device, stream string, attrs map[string]string) {
	t.Helper()
	env, err := wire.New(wire.TypeEvent, time.Now(), wire.Event{Kind: "ota", Severity: "info", Message: "update " + attrs["phase"], Attrs: attrs})
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range f.subs {
		fn(operator.Message{Device: device, Stream: stream, Env: env})
	}
}

// TestLink: the outcome of a box is its first final "ota" event of this
// release after the offer; progress, other versions, events from before the
// offer and other streams are ignored; a refused command is an offer error.
func TestLink(t *testing.T) {
	_, privs, _ := manifest.NewRootKeys(1, 1)
	pub, priv, _ := ed25519.GenerateKey(nil)
	keys, _ := manifest.SignKeys(privs, manifest.KeysDocument{Version: 1, Expires: time.Now().Add(time.Hour), Threshold: 1, Keys: []ed25519.PublicKey{pub}})
	man, err := manifest.SignManifest([]ed25519.PrivateKey{priv}, manifest.Manifest{Version: 7, Target: "amd64", Expires: time.Now().Add(time.Hour),
		Artifacts: []manifest.Artifact{{Name: "root", URL: "https://u.example/root.img", Length: 1, SHA256: manifest.Digest{1}}}})
	if err != nil {
		t.Fatal(err)
	}
	op := &fakeOperator{sent: map[string]map[string][]byte{}, answer: func(dev string) wire.CommandResult {
		if dev == "down" {
			return wire.CommandResult{Error: "update: no ota_root in the fleet file"}
		}
		return wire.CommandResult{OK: true}
	}}
	l, err := NewLink(op, keys, man)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	op.event(t, "a", "event", map[string]string{"phase": "committed", "version": "7"}) // before the offer
	if err := l.Offer(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if string(op.sent["a"]["manifest"]) != string(man) || string(op.sent["a"]["keys"]) != string(keys) {
		t.Error("the update command does not carry the signed documents")
	}
	if err := l.Offer(ctx, "down"); err == nil || !strings.Contains(err.Error(), "ota_root") {
		t.Errorf("refused offer: %v", err)
	}
	for _, e := range []struct{ stream, phase, version string }{
		{"event", "downloading", "7"},
		{"event", "trial", "7"},
		{"event", "committed", "6"},
		{"status", "committed", "7"},
	} {
		op.event(t, "a", e.stream, map[string]string{"phase": e.phase, "version": e.version})
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	if _, err := l.Outcome(short, "a"); err == nil {
		t.Error("an outcome from progress, another version or another stream")
	}
	cancel()
	op.event(t, "a", "event", map[string]string{"phase": "rolled_back", "version": "7", "reason": "health gate: x"})
	op.event(t, "a", "event", map[string]string{"phase": "committed", "version": "7"}) // after the outcome: ignored
	if r, err := l.Outcome(ctx, "a"); err != nil || r.Phase != "rolled_back" || r.Reason != "health gate: x" {
		t.Errorf("outcome %+v %v", r, err)
	}
	// A refusal before verifying carries version 0.
	l.Offer(ctx, "b")
	op.event(t, "b", "event", map[string]string{"phase": "refused", "version": "0", "reason": "busy"})
	if r, err := l.Outcome(ctx, "b"); err != nil || r.Phase != "refused" {
		t.Errorf("outcome %+v %v", r, err)
	}
	if _, err := l.Outcome(ctx, "never-offered"); err == nil {
		t.Error("outcome of a box never offered")
	}
	// The command waits for an offline box as long as the box's window
	// (the rollout's per-box timeout), not a fixed minute.
	for _, window := range []time.Duration{20 * time.Minute, 10 * time.Second} {
		wctx, cancel := context.WithTimeout(ctx, window)
		l.Offer(wctx, "c")
		cancel()
		if got := op.waits["c"]; got > window || got < window-5*time.Second {
			t.Errorf("window %v: the command waits %v", window, got)
		}
	}
}
