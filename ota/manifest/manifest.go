// Package manifest decides, before a single byte of an update is fetched,
// whether a release offer may be installed on this box (TUF-style, compact).
//
// Key hierarchy: an offline fleet root key set (k-of-n, pinned in the image as
// a RootOfTrust) signs a keys document naming the release keys and their own
// threshold; release keys sign manifests. A release key is rotated or revoked
// by the root signing a keys document with a higher version that no longer
// lists it (and names it under "revoked", so the refusal says why). The box
// stores the highest keys document version it accepted and refuses older ones.
//
// Wire format of both documents (JSON, at most MaxSize bytes):
//
//	{"signed":{"type":"manifest",...},"signatures":[{"keyid":"<hex sha256 of key>","sig":"<base64>"}]}
//
// A signature covers "outpost-ota-v1 <type>\n" followed by the exact bytes of
// the "signed" value as they appear in the envelope; nothing is re-encoded
// before verifying. Signatures are checked before the signed object is
// decoded, and decoding is strict: unknown, duplicate or non-lowercase member
// names, trailing data and invalid UTF-8 are refused.
package manifest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Hardware targets and artifact names the fleet uses. Verify compares the
// target with State.Target; any name matching [a-z0-9][a-z0-9._-]* is valid.
const (
	TargetAMD64  = "amd64"
	TargetRPi    = "rpi"
	ArtifactRoot = "root"
	ArtifactBoot = "boot"
)

// Bounds on untrusted input; larger documents are refused unread.
const (
	MaxSize       = 64 << 10 // bytes of one envelope
	MaxSignatures = 32       // entries in one envelope
	MaxArtifacts  = 16
	MaxKeys       = 32 // release keys in a keys document
)

// Reasons an offer is refused. Every error Verify, VerifyKeys and Artifact
// return wraps exactly one of them (except a bad RootOfTrust, which is a
// configuration error of the box).
var (
	ErrMalformed  = errors.New("ota: malformed document")
	ErrSignature  = errors.New("ota: signatures missing, invalid or below threshold")
	ErrUnknownKey = errors.New("ota: signed by a key neither the root of trust nor the current keys document lists")
	ErrRevokedKey = errors.New("ota: signed by a revoked key")
	ErrTarget     = errors.New("ota: release is for other hardware")
	ErrRollback   = errors.New("ota: version not newer than the one accepted before (rollback)")
	ErrExpired    = errors.New("ota: document expired (freeze attack or stale offer)")
	ErrNotSigned  = errors.New("ota: artifact not in the signed set (mix-and-match)")
)

// RootOfTrust is what the box pins: the fleet root public keys and how many
// of them must sign a keys document. It comes from the fleet file.
type RootOfTrust struct {
	Keys      []ed25519.PublicKey `json:"keys"`
	Threshold int                 `json:"threshold"`
}

// KeysDocument lists the release keys the root currently trusts.
type KeysDocument struct {
	// Version must grow with every new document; the box refuses one lower
	// than the highest it accepted (State.KeysVersion).
	Version uint64 `json:"version"`
	// Expires bounds how long a captured document can be replayed; the root
	// must re-sign before then.
	Expires time.Time `json:"expires"`
	// Threshold is how many distinct Keys must sign a manifest.
	Threshold int                 `json:"threshold"`
	Keys      []ed25519.PublicKey `json:"keys"`
	// Revoked holds KeyIDs of former release keys. It only makes the refusal
	// name the cause (ErrRevokedKey rather than ErrUnknownKey): a key absent
	// from Keys is refused either way.
	Revoked []string `json:"revoked,omitempty"`
}

// Manifest is one release for one hardware target.
type Manifest struct {
	// Version must be above the box's installed floor (State.Floor).
	Version   uint64     `json:"version"`
	Target    string     `json:"target"`
	Artifacts []Artifact `json:"artifacts"`
	Expires   time.Time  `json:"expires"`
}

// Artifact is one signed file of a release: the fetcher writes exactly Length
// bytes from URL and requires their SHA-256 to be SHA256.
type Artifact struct {
	Name   string `json:"name"`
	URL    string `json:"url"` // absolute https URL
	Length int64  `json:"length"`
	SHA256 Digest `json:"sha256"`
}

// Digest is a SHA-256 digest, 64 lowercase hex digits in JSON.
type Digest [sha256.Size]byte

// MarshalText encodes d as lowercase hex.
func (d Digest) MarshalText() ([]byte, error) { return hex.AppendEncode(nil, d[:]), nil }

// UnmarshalText accepts exactly 64 lowercase hex digits.
func (d *Digest) UnmarshalText(b []byte) error {
	if len(b) != 2*sha256.Size || strings.ToLower(string(b)) != string(b) {
		return errors.New("sha256 must be 64 lowercase hex digits")
	}
	_, err := hex.Decode(d[:], b)
	return err
}

// String is the lowercase hex form.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// State is what the box knows, from its store and a trusted clock.
type State struct {
	Floor       uint64    // installed version floor: offers must be above it
	KeysVersion uint64    // highest keys document version accepted so far
	Target      string    // this box's hardware target
	Now         time.Time // trusted time (not a battery-less RTC); must be set
}

// KeyID names a public key in signatures and revocation lists: the hex
// SHA-256 of its 32 bytes.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}

// Artifact returns the signed artifact called name, and ErrNotSigned for any
// name the manifest does not sign, so nothing unsigned is ever fetched.
func (m Manifest) Artifact(name string) (Artifact, error) {
	names := make([]string, 0, len(m.Artifacts))
	for _, a := range m.Artifacts {
		if a.Name == name {
			return a, nil
		}
		names = append(names, a.Name)
	}
	return Artifact{}, fmt.Errorf("%w: %q (release %d signs %s)", ErrNotSigned, name, m.Version, strings.Join(names, ", "))
}

// VerifyKeys checks a keys document against the pinned root: at least
// root.Threshold distinct root keys signed it, its version is not below
// st.KeysVersion, and it has not expired at st.Now. The caller persists the
// returned Version as the new State.KeysVersion once it acts on it.
func VerifyKeys(root RootOfTrust, doc []byte, st State) (KeysDocument, error) {
	if err := checkKeySet(root.Keys, root.Threshold); err != nil {
		return KeysDocument{}, fmt.Errorf("ota: root of trust: %v", err)
	}
	env, err := parseEnvelope(doc)
	if err != nil {
		return KeysDocument{}, fmt.Errorf("keys document: %w", err)
	}
	if err := verifySigs(kindKeys, env, root.Keys, root.Threshold, nil); err != nil {
		return KeysDocument{}, fmt.Errorf("keys document: %w", err)
	}
	return acceptKeys(env.Signed, st)
}

// acceptKeys decodes and judges a keys document's signed object once its
// signatures have been verified.
func acceptKeys(raw []byte, st State) (KeysDocument, error) {
	var body keysBody
	if err := decodeBody(raw, kindKeys, &body); err != nil {
		return KeysDocument{}, fmt.Errorf("keys document: %w", err)
	}
	k := body.KeysDocument
	if err := k.check(); err != nil {
		return KeysDocument{}, fmt.Errorf("keys document: %w", err)
	}
	switch {
	case k.Version < st.KeysVersion:
		return KeysDocument{}, fmt.Errorf("%w: keys document version %d is older than version %d accepted before", ErrRollback, k.Version, st.KeysVersion)
	case st.Now.IsZero():
		return KeysDocument{}, fmt.Errorf("%w: no trusted time to check expiry against", ErrExpired)
	case !st.Now.Before(k.Expires):
		return KeysDocument{}, fmt.Errorf("%w: keys document version %d expired at %s (now %s)", ErrExpired, k.Version, k.Expires.Format(time.RFC3339), st.Now.UTC().Format(time.RFC3339))
	}
	return k, nil
}

// Verify decides whether the manifest may be installed: the keys document
// passes VerifyKeys, at least its threshold of distinct current release keys
// signed the manifest, and the manifest is for st.Target, above st.Floor and
// not expired at st.Now. Only the returned Manifest may be used; fetch its
// artifacts through Manifest.Artifact. The keys document version to persist
// comes from VerifyKeys on the same bytes.
func Verify(root RootOfTrust, keysDoc, manifest []byte, st State) (Manifest, error) {
	keys, err := VerifyKeys(root, keysDoc, st)
	if err != nil {
		return Manifest{}, err
	}
	return verifyManifest(keys, manifest, st)
}

func verifyManifest(keys KeysDocument, doc []byte, st State) (Manifest, error) {
	env, err := parseEnvelope(doc)
	if err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	if err := verifySigs(kindManifest, env, keys.Keys, keys.Threshold, keys.Revoked); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w (keys document version %d)", err, keys.Version)
	}
	return acceptManifest(env.Signed, st)
}

// acceptManifest decodes and judges a manifest's signed object once its
// signatures have been verified.
func acceptManifest(raw []byte, st State) (Manifest, error) {
	var body manifestBody
	if err := decodeBody(raw, kindManifest, &body); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	m := body.Manifest
	if err := m.check(); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	switch {
	case st.Target == "" || m.Target != st.Target:
		return Manifest{}, fmt.Errorf("%w: release %d is for %q, this box is %q", ErrTarget, m.Version, m.Target, st.Target)
	case m.Version <= st.Floor:
		return Manifest{}, fmt.Errorf("%w: offered version %d, installed floor %d", ErrRollback, m.Version, st.Floor)
	case st.Now.IsZero():
		return Manifest{}, fmt.Errorf("%w: no trusted time to check expiry against", ErrExpired)
	case !st.Now.Before(m.Expires):
		return Manifest{}, fmt.Errorf("%w: release %d expired at %s (now %s)", ErrExpired, m.Version, m.Expires.Format(time.RFC3339), st.Now.UTC().Format(time.RFC3339))
	}
	return m, nil
}

// verifySigs requires threshold distinct keys among keys to have a valid
// signature over env.Signed. Signatures by other keys are ignored when the
// threshold is met; otherwise the refusal names a revoked key first, then an
// unknown one, then the count.
func verifySigs(kind string, env envelope, keys []ed25519.PublicKey, threshold int, revoked []string) error {
	msg := signingInput(kind, env.Signed)
	ids := make(map[string]ed25519.PublicKey, len(keys))
	for _, k := range keys {
		ids[KeyID(k)] = k
	}
	good := make(map[string]bool, len(keys))
	var unknown, gone string
	for _, s := range env.Signatures {
		key, listed := ids[s.KeyID]
		switch {
		case good[s.KeyID]:
			// a duplicate counts once
		case listed:
			if ed25519.Verify(key, msg, s.Sig) {
				good[s.KeyID] = true
			}
		case contains(revoked, s.KeyID):
			gone = s.KeyID
		default:
			unknown = s.KeyID
		}
	}
	n := len(good)
	switch {
	case n >= threshold:
		return nil
	case gone != "":
		return fmt.Errorf("%w: %.16s… (%d of %d valid signatures)", ErrRevokedKey, gone, n, threshold)
	case unknown != "":
		return fmt.Errorf("%w: %.16s… (%d of %d valid signatures)", ErrUnknownKey, unknown, n, threshold)
	}
	return fmt.Errorf("%w: %d of %d required", ErrSignature, n, threshold)
}

func signingInput(kind string, signed []byte) []byte {
	return append([]byte("outpost-ota-v1 "+kind+"\n"), signed...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// checkKeySet accepts 1..MaxKeys distinct 32-byte keys and a threshold they
// can meet.
func checkKeySet(keys []ed25519.PublicKey, threshold int) error {
	if len(keys) == 0 || len(keys) > MaxKeys {
		return fmt.Errorf("%d keys, want 1 to %d", len(keys), MaxKeys)
	}
	if threshold < 1 || threshold > len(keys) {
		return fmt.Errorf("threshold %d with %d keys", threshold, len(keys))
	}
	for i, k := range keys {
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("key %d is %d bytes, not %d", i, len(k), ed25519.PublicKeySize)
		}
		for _, o := range keys[:i] {
			if k.Equal(o) {
				return fmt.Errorf("key %.16s… listed twice", KeyID(k))
			}
		}
	}
	return nil
}

func (k KeysDocument) check() error {
	if err := checkKeySet(k.Keys, k.Threshold); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case k.Version == 0:
		return fmt.Errorf("%w: version missing", ErrMalformed)
	case k.Expires.IsZero():
		return fmt.Errorf("%w: expires missing", ErrMalformed)
	case len(k.Revoked) > 4*MaxKeys:
		return fmt.Errorf("%w: %d revoked keys", ErrMalformed, len(k.Revoked))
	}
	for _, id := range k.Revoked {
		var d Digest
		if d.UnmarshalText([]byte(id)) != nil {
			return fmt.Errorf("%w: revoked entry %q is not a key id", ErrMalformed, id)
		}
		for _, key := range k.Keys {
			if KeyID(key) == id {
				return fmt.Errorf("%w: key %.16s… both listed and revoked", ErrMalformed, id)
			}
		}
	}
	return nil
}

func (m Manifest) check() error {
	switch {
	case m.Version == 0:
		return fmt.Errorf("%w: version missing", ErrMalformed)
	case !validName(m.Target):
		return fmt.Errorf("%w: target %q", ErrMalformed, m.Target)
	case m.Expires.IsZero():
		return fmt.Errorf("%w: expires missing", ErrMalformed)
	case len(m.Artifacts) == 0 || len(m.Artifacts) > MaxArtifacts:
		return fmt.Errorf("%w: %d artifacts, want 1 to %d", ErrMalformed, len(m.Artifacts), MaxArtifacts)
	}
	for i, a := range m.Artifacts {
		if !validName(a.Name) {
			return fmt.Errorf("%w: artifact name %q", ErrMalformed, a.Name)
		}
		for _, o := range m.Artifacts[:i] {
			if o.Name == a.Name {
				return fmt.Errorf("%w: artifact %q listed twice", ErrMalformed, a.Name)
			}
		}
		if a.Length <= 0 {
			return fmt.Errorf("%w: artifact %q length %d", ErrMalformed, a.Name, a.Length)
		}
		if a.SHA256 == (Digest{}) {
			return fmt.Errorf("%w: artifact %q has no sha256", ErrMalformed, a.Name)
		}
		u, err := url.Parse(a.URL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
			return fmt.Errorf("%w: artifact %q url %q is not a plain absolute https URL", ErrMalformed, a.Name, a.URL)
		}
	}
	return nil
}

// validName accepts [a-z0-9][a-z0-9._-]{0,63}.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}
