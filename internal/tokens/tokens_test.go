package tokens

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

type memUsed struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (m *memUsed) Use(id string, _ time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen[id] {
		return false, nil
	}
	m.seen[id] = true
	return true, nil
}

func TestVerify(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	_, otherKey, _ := ed25519.GenerateKey(nil)
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	base := Claims{User: "ana", Device: "op-box", Cameras: []string{"door"}, Actions: []string{ActionLive},
		NotBefore: now.Add(-time.Minute).Unix(), Expires: now.Add(time.Hour).Unix()}
	mint := func(k ed25519.PrivateKey, mod func(*Claims)) string {
		c := base
		mod(&c)
		tok, err := Mint(k, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	v := &Verifier{Key: pub, Device: "op-box", Now: func() time.Time { return now }, Used: &memUsed{seen: map[string]bool{}}}
	single := mint(key, func(c *Claims) { c.SingleUse = true })
	good := mint(key, func(*Claims) {})
	for _, tc := range []struct {
		name   string
		tok    string
		camera string
		action string
		want   error
	}{
		{"good", good, "door", ActionLive, nil},
		{"good again (multi-use)", good, "door", ActionLive, nil},
		{"forged", mint(otherKey, func(*Claims) {}), "door", ActionLive, ErrSignature},
		{"tampered claims", strings.Replace(good, good[10:14], "AAAA", 1), "door", ActionLive, ErrSignature},
		{"expired", mint(key, func(c *Claims) {
			c.Expires = now.Add(-2 * time.Minute).Unix()
			c.NotBefore = now.Add(-time.Hour).Unix()
		}), "door", ActionLive, ErrExpired},
		{"not yet valid", mint(key, func(c *Claims) { c.NotBefore = now.Add(time.Hour).Unix(); c.Expires = now.Add(2 * time.Hour).Unix() }), "door", ActionLive, ErrNotYetValid},
		{"other device", mint(key, func(c *Claims) { c.Device = "op-other" }), "door", ActionLive, ErrDevice},
		{"other camera", good, "garage", ActionLive, ErrCamera},
		{"action not granted", good, "door", ActionExport, ErrAction},
		{"wildcard camera", mint(key, func(c *Claims) { c.Cameras = []string{"*"} }), "garage", ActionLive, nil},
		{"single use, first", single, "door", ActionLive, nil},
		{"single use, replayed", single, "door", ActionLive, ErrReplayed},
		{"garbage", "opt1.!!!.???", "door", ActionLive, ErrMalformed},
		{"no prefix", "eyJhbGciOi.x.y", "door", ActionLive, ErrMalformed},
		{"huge", "opt1." + strings.Repeat("A", MaxLen), "door", ActionLive, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(tc.tok)
			if err == nil {
				err = c.Grants(tc.camera, tc.action)
			}
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	pub, key, _ := ed25519.GenerateKey(nil)
	tok, _ := Mint(key, Claims{User: "u", Device: "d", Cameras: []string{"c"}, Actions: []string{ActionLive}, NotBefore: 1, Expires: 2})
	f.Add(tok)
	f.Add("opt1.e30.AAAA")
	f.Add("opt1..")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s, pub)
		if err == nil && c.check() != nil {
			t.Fatal("accepted claims that do not check")
		}
	})
}
