package manifest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

var sentinels = []error{ErrMalformed, ErrSignature, ErrUnknownKey, ErrRevokedKey, ErrTarget, ErrRollback, ErrExpired}

// checkOutcome: a refusal names its reason; an acceptance is a manifest the
// box may act on.
func checkOutcome(t *testing.T, m Manifest, err error) {
	t.Helper()
	if err != nil {
		if !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) }) {
			t.Fatalf("refusal without a reason: %v", err)
		}
		return
	}
	if m.check() != nil || m.Target != TargetAMD64 || m.Version <= 1 || !now.Before(m.Expires) {
		t.Fatalf("accepted %+v", m)
	}
}

// FuzzParseManifest feeds the input to the manifest checks twice: as a
// whole envelope (against a verified keys document), and as the signed
// object whose signatures were checked, so the strict decoder behind the
// signature check is reached without paying for signing every input.
func FuzzParseManifest(f *testing.F) {
	fl := newFleet()
	keys, err := VerifyKeys(fl.root, fl.keysDoc(f, 1, 1, 0), state(1))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range corpusManifests(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := verifyManifest(keys, b, state(1))
		checkOutcome(t, m, err)
		ParseManifestUnverified(b)
		m, err = acceptManifest(b, state(1))
		checkOutcome(t, m, err)
		if err != nil {
			return
		}
		// What was accepted signs and verifies to the same release.
		again, err := verifyManifest(keys, sign(t, m, fl.relPrivs[0]), State{Floor: 1, KeysVersion: 1, Target: TargetAMD64, Now: now.Add(-time.Second)})
		if err != nil || again.Version != m.Version || !slices.Equal(again.Artifacts, m.Artifacts) || !again.Expires.Equal(m.Expires.Truncate(time.Second)) {
			t.Fatalf("re-signed %+v: %+v %v", m, again, err)
		}
	})
}

// FuzzParseKeys does the same for keys documents and the root signature.
func FuzzParseKeys(f *testing.F) {
	fl := newFleet()
	for _, s := range corpusKeys(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(k KeysDocument, err error) {
			if err != nil {
				if !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) }) {
					t.Fatalf("refusal without a reason: %v", err)
				}
			} else if k.check() != nil || k.Version < 1 || !now.Before(k.Expires) {
				t.Fatalf("accepted %+v", k)
			}
		}
		check(VerifyKeys(fl.root, b, state(1)))
		check(acceptKeys(b, state(1)))
		ParseKeysUnverified(b)
	})
}

func corpusManifests(t testing.TB) [][]byte {
	fl := newFleet()
	m := release(2)
	signed := sign(t, m, fl.relPrivs[0])
	env, _ := parseEnvelope(signed)
	return [][]byte{
		signed,
		env.Signed,
		[]byte(`{"type":"manifest","version":18446744073709551615,"target":"amd64","artifacts":[{"name":"root","url":"https://h/r","length":9223372036854775807,"sha256":"` + fmt.Sprint(Digest(sha256.Sum256(nil))) + `"}],"expires":"2030-01-02T05:04:05.5+02:00"}`),
		[]byte(`{"type":"manifest","version":2,"Version":3}`),
		[]byte(`{"signed":{"type":"manifest"},"signatures":[{"keyid":"00","sig":"AA=="}]}`),
	}
}

func corpusKeys(t testing.TB) [][]byte {
	fl := newFleet()
	signed, err := SignKeys(fl.rootPrivs, KeysDocument{Version: 3, Expires: now.Add(time.Hour), Threshold: 2,
		Keys: fl.rel[1:], Revoked: []string{KeyID(fl.rel[0])}})
	if err != nil {
		t.Fatal(err)
	}
	env, _ := parseEnvelope(signed)
	return [][]byte{signed, env.Signed, []byte(`{"type":"keys","version":1,"threshold":0,"keys":[]}`)}
}

// TestFuzzCorpus keeps testdata/fuzz in step with the seeds above; run it
// with OTA_WRITE_CORPUS=1 to rewrite the files.
func TestFuzzCorpus(t *testing.T) {
	for name, seeds := range map[string][][]byte{"FuzzParseManifest": corpusManifests(t), "FuzzParseKeys": corpusKeys(t)} {
		dir := filepath.Join("testdata", "fuzz", name)
		for i, s := range seeds {
			path := filepath.Join(dir, fmt.Sprintf("seed%d", i))
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if os.Getenv("OTA_WRITE_CORPUS") != "" {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got, err := os.ReadFile(path); err != nil || string(got) != want {
				t.Errorf("%s is stale or missing (%v): run with OTA_WRITE_CORPUS=1", path, err)
			}
		}
	}
}
