// Package tokens is LAN access without passwords on the box: the fleet
// signs short-lived viewer tokens with its Ed25519 key, and the box verifies
// them offline against the fleet public key baked into its image.
//
// A token is "opt1." + base64url(JSON claims) + "." + base64url(signature
// over the first two parts). It names the user, the one device it is good
// for, the cameras, the actions, a validity window and an id; a single-use
// token is refused the second time (the box keeps used ids until they
// expire).
package tokens

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/outpost-gw/outpost/internal/store"
)

const prefix = "opt1."

// MaxLen bounds a token; longer input is refused unread.
const MaxLen = 4096

// Actions a token can grant.
const (
	ActionLive     = "live"
	ActionPlayback = "playback"
	ActionExport   = "export"
	ActionAdmin    = "admin"
)

// KnownActions lists the valid actions.
var KnownActions = []string{ActionLive, ActionPlayback, ActionExport, ActionAdmin}

// Reasons a token is refused.
var (
	ErrMalformed   = errors.New("token malformed")
	ErrSignature   = errors.New("token signature invalid (forged, or another fleet's)")
	ErrExpired     = errors.New("token expired")
	ErrNotYetValid = errors.New("token not yet valid")
	ErrDevice      = errors.New("token is for another device")
	ErrCamera      = errors.New("token does not grant this camera")
	ErrAction      = errors.New("token does not grant this action")
	ErrReplayed    = errors.New("single-use token already used")
)

// Claims are what a token says.
type Claims struct {
	User      string   `json:"u"`
	Device    string   `json:"d"`
	Cameras   []string `json:"c"` // "*" grants every camera
	Actions   []string `json:"a"`
	NotBefore int64    `json:"nbf"` // unix seconds
	Expires   int64    `json:"exp"`
	ID        string   `json:"jti"`
	SingleUse bool     `json:"su,omitempty"`
}

// Mint signs claims (filling in an id when empty).
func Mint(key ed25519.PrivateKey, c Claims) (string, error) {
	if c.ID == "" {
		b := make([]byte, 12)
		rand.Read(b)
		c.ID = hex.EncodeToString(b)
	}
	if err := c.check(); err != nil {
		return "", err
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signed := prefix + base64.RawURLEncoding.EncodeToString(body)
	sig := ed25519.Sign(key, []byte(signed))
	tok := signed + "." + base64.RawURLEncoding.EncodeToString(sig)
	if len(tok) > MaxLen {
		return "", fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(tok), MaxLen)
	}
	return tok, nil
}

func (c Claims) check() error {
	switch {
	case c.User == "" || len(c.User) > 128:
		return fmt.Errorf("%w: user", ErrMalformed)
	case c.Device == "" || len(c.Device) > 64:
		return fmt.Errorf("%w: device", ErrMalformed)
	case len(c.Cameras) == 0 || len(c.Cameras) > 256:
		return fmt.Errorf("%w: cameras", ErrMalformed)
	case len(c.Actions) == 0:
		return fmt.Errorf("%w: actions", ErrMalformed)
	case c.Expires <= c.NotBefore:
		return fmt.Errorf("%w: expires before it starts", ErrMalformed)
	case c.ID == "" || len(c.ID) > 64:
		return fmt.Errorf("%w: id", ErrMalformed)
	}
	for _, a := range c.Actions {
		if !slices.Contains(KnownActions, a) {
			return fmt.Errorf("%w: unknown action %q", ErrMalformed, a)
		}
	}
	return nil
}

// Parse checks form and signature and returns the claims; it does not look
// at time, device or grants (Verifier does).
func Parse(tok string, pub ed25519.PublicKey) (Claims, error) {
	if len(tok) > MaxLen || !strings.HasPrefix(tok, prefix) {
		return Claims{}, ErrMalformed
	}
	dot := strings.LastIndexByte(tok, '.')
	if dot <= len(prefix) {
		return Claims{}, ErrMalformed
	}
	signed, sigPart := tok[:dot], tok[dot+1:]
	sig, err := base64.RawURLEncoding.DecodeString(sigPart)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Claims{}, ErrMalformed
	}
	body, err := base64.RawURLEncoding.DecodeString(signed[len(prefix):])
	if err != nil {
		return Claims{}, ErrMalformed
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, []byte(signed), sig) {
		return Claims{}, ErrSignature
	}
	var c Claims
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := c.check(); err != nil {
		return Claims{}, err
	}
	return c, nil
}

// Grants reports whether the claims allow action on camera.
func (c Claims) Grants(camera, action string) error {
	if !slices.Contains(c.Actions, action) && !slices.Contains(c.Actions, ActionAdmin) {
		return fmt.Errorf("%w: %s", ErrAction, action)
	}
	if camera != "" && !slices.Contains(c.Cameras, camera) && !slices.Contains(c.Cameras, "*") {
		return fmt.Errorf("%w: %s", ErrCamera, camera)
	}
	return nil
}

// UsedStore remembers single-use token ids until they expire. Use returns
// false if id was used before.
type UsedStore interface {
	Use(id string, until time.Time) (first bool, err error)
}

// Verifier checks tokens for one device.
type Verifier struct {
	Key    ed25519.PublicKey
	Device string
	Now    func() time.Time
	// Skew tolerated between the fleet's clock and the box's (default 1 min).
	Skew time.Duration
	Used UsedStore
}

// Verify parses tok and checks time, device and single use (spending a
// single-use token); then the caller checks Grants for the camera and
// action at hand. Callers that refuse for other reasons after Verify
// should use Check, then Spend once everything else allowed the request.
func (v *Verifier) Verify(tok string) (Claims, error) {
	c, err := v.Check(tok)
	if err != nil {
		return c, err
	}
	return c, v.Spend(c)
}

// Check parses tok and checks its signature, validity window and device;
// it does not spend a single-use token (see Spend).
func (v *Verifier) Check(tok string) (Claims, error) {
	c, err := Parse(tok, v.Key)
	if err != nil {
		return Claims{}, err
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	switch skew := v.skew(); {
	case now.Add(skew).Unix() < c.NotBefore:
		return c, ErrNotYetValid
	case now.Add(-skew).Unix() >= c.Expires:
		return c, ErrExpired
	case c.Device != v.Device:
		return c, ErrDevice
	}
	return c, nil
}

// Spend uses up a single-use token: ErrReplayed when it was used before.
// Other tokens pass.
func (v *Verifier) Spend(c Claims) error {
	if !c.SingleUse {
		return nil
	}
	if v.Used == nil {
		return fmt.Errorf("%w: no store for single-use tokens", ErrReplayed)
	}
	first, err := v.Used.Use(c.ID, time.Unix(c.Expires, 0).Add(v.skew()))
	if err != nil {
		return err
	}
	if !first {
		return ErrReplayed
	}
	return nil
}

func (v *Verifier) skew() time.Duration {
	if v.Skew == 0 {
		return time.Minute
	}
	return v.Skew
}

// StoreUsed keeps used single-use token ids in the state store.
type StoreUsed struct {
	Store *store.Store
	Now   func() time.Time
}

// Use implements UsedStore.
func (s *StoreUsed) Use(id string, until time.Time) (bool, error) {
	return s.Store.SeenOnce("tokens_used", []byte(id), until, s.Now())
}
