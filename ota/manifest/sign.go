package manifest

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// NewRootKeys makes n fresh key pairs and the RootOfTrust requiring threshold
// of them. It serves for release keys too (put the returned Keys into a
// KeysDocument). Keep root private keys offline and apart from each other.
func NewRootKeys(n, threshold int) (RootOfTrust, []ed25519.PrivateKey, error) {
	root := RootOfTrust{Threshold: threshold}
	var privs []ed25519.PrivateKey
	for range n {
		pub, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			return RootOfTrust{}, nil, fmt.Errorf("ota: generating key: %w", err)
		}
		root.Keys = append(root.Keys, pub)
		privs = append(privs, priv)
	}
	if err := checkKeySet(root.Keys, threshold); err != nil {
		return RootOfTrust{}, nil, fmt.Errorf("ota: root keys: %v", err)
	}
	return root, privs, nil
}

// SignKeys encodes doc (Expires in UTC, to the second) and signs it with
// each root private key. Fewer keys than the root threshold (even none) are
// fine when the other holders add theirs with Cosign.
func SignKeys(rootPrivs []ed25519.PrivateKey, doc KeysDocument) ([]byte, error) {
	doc.Expires = doc.Expires.UTC().Truncate(time.Second)
	if err := doc.check(); err != nil {
		return nil, fmt.Errorf("keys document: %w", err)
	}
	raw, err := json.Marshal(keysBody{Type: kindKeys, KeysDocument: doc})
	if err != nil {
		return nil, fmt.Errorf("keys document: %w", err)
	}
	return seal(kindKeys, raw, nil, rootPrivs)
}

// SignManifest encodes m (Expires in UTC, to the second) and signs it with
// each release private key; see SignKeys for partial signing.
func SignManifest(releasePrivs []ed25519.PrivateKey, m Manifest) ([]byte, error) {
	m.Expires = m.Expires.UTC().Truncate(time.Second)
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	raw, err := json.Marshal(manifestBody{Type: kindManifest, Manifest: m})
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return seal(kindManifest, raw, nil, releasePrivs)
}

// Cosign adds signatures by privs to a signed keys document or manifest,
// leaving the signed bytes and the signatures already there untouched; a key
// that has signed already is skipped. It does not check existing signatures.
func Cosign(doc []byte, privs ...ed25519.PrivateKey) ([]byte, error) {
	env, err := parseEnvelope(doc)
	if err != nil {
		return nil, err
	}
	var peek struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(env.Signed, &peek); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch peek.Type {
	case kindKeys:
		_, _, err = ParseKeysUnverified(doc)
	case kindManifest:
		_, _, err = ParseManifestUnverified(doc)
	default:
		err = fmt.Errorf("%w: unknown document type %q", ErrMalformed, peek.Type)
	}
	if err != nil {
		return nil, err
	}
	return seal(peek.Type, env.Signed, env.Signatures, privs)
}

// ParseKeysUnverified decodes a keys document strictly and returns the key
// ids its signatures claim, without checking any signature: for the fleet
// CLI to show a document. Nothing in it may be trusted; the box uses
// VerifyKeys.
func ParseKeysUnverified(doc []byte) (KeysDocument, []string, error) {
	env, err := parseEnvelope(doc)
	if err != nil {
		return KeysDocument{}, nil, err
	}
	var body keysBody
	if err := decodeBody(env.Signed, kindKeys, &body); err != nil {
		return KeysDocument{}, nil, err
	}
	if err := body.check(); err != nil {
		return KeysDocument{}, nil, err
	}
	return body.KeysDocument, signers(env), nil
}

// ParseManifestUnverified is ParseKeysUnverified for a manifest; the box
// uses Verify.
func ParseManifestUnverified(doc []byte) (Manifest, []string, error) {
	env, err := parseEnvelope(doc)
	if err != nil {
		return Manifest{}, nil, err
	}
	var body manifestBody
	if err := decodeBody(env.Signed, kindManifest, &body); err != nil {
		return Manifest{}, nil, err
	}
	if err := body.check(); err != nil {
		return Manifest{}, nil, err
	}
	return body.Manifest, signers(env), nil
}

func signers(env envelope) []string {
	ids := make([]string, 0, len(env.Signatures))
	for _, s := range env.Signatures {
		ids = append(ids, s.KeyID)
	}
	return ids
}

// seal signs raw and writes the envelope by hand: json.Marshal would
// re-encode a RawMessage, and the signed bytes must stay exactly as signed.
func seal(kind string, raw []byte, sigs []signature, privs []ed25519.PrivateKey) ([]byte, error) {
	msg := signingInput(kind, raw)
	sigs = slices.Clip(sigs)
	for _, p := range privs {
		if len(p) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("ota: private key is %d bytes, not %d", len(p), ed25519.PrivateKeySize)
		}
		id := KeyID(p.Public().(ed25519.PublicKey))
		if !slices.ContainsFunc(sigs, func(s signature) bool { return s.KeyID == id }) {
			sigs = append(sigs, signature{KeyID: id, Sig: ed25519.Sign(p, msg)})
		}
	}
	if len(sigs) > MaxSignatures {
		return nil, fmt.Errorf("%w: %d signatures, limit %d", ErrMalformed, len(sigs), MaxSignatures)
	}
	if sigs == nil {
		sigs = []signature{}
	}
	list, err := json.Marshal(sigs)
	if err != nil {
		return nil, err
	}
	out := fmt.Appendf(nil, `{"signed":%s,"signatures":%s}`, raw, list)
	if len(out) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(out), MaxSize)
	}
	return out, nil
}
