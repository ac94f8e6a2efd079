package manifest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// now is the trusted time of every test (and of the fuzz corpus).
var now = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// detKeys derives n key pairs from label, so the committed fuzz corpus stays
// valid.
func detKeys(label string, n int) ([]ed25519.PublicKey, []ed25519.PrivateKey) {
	var pubs []ed25519.PublicKey
	var privs []ed25519.PrivateKey
	for i := range n {
		seed := sha256.Sum256(fmt.Appendf(nil, "outpost ota test %s %d", label, i))
		priv := ed25519.NewKeyFromSeed(seed[:])
		pubs = append(pubs, priv.Public().(ed25519.PublicKey))
		privs = append(privs, priv)
	}
	return pubs, privs
}

// fleet is a 2-of-3 root and 3 release keys.
type fleet struct {
	root      RootOfTrust
	rootPrivs []ed25519.PrivateKey
	rel       []ed25519.PublicKey
	relPrivs  []ed25519.PrivateKey
}

func newFleet() fleet {
	rootPubs, rootPrivs := detKeys("root", 3)
	rel, relPrivs := detKeys("release", 3)
	return fleet{RootOfTrust{rootPubs, 2}, rootPrivs, rel, relPrivs}
}

func (f fleet) keysDoc(t testing.TB, version uint64, threshold int, keys ...int) []byte {
	t.Helper()
	d := KeysDocument{Version: version, Expires: now.Add(365 * 24 * time.Hour), Threshold: threshold}
	for _, i := range keys {
		d.Keys = append(d.Keys, f.rel[i])
	}
	b, err := SignKeys(f.rootPrivs[:2], d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func release(version uint64) Manifest {
	return Manifest{
		Version: version,
		Target:  TargetAMD64,
		Artifacts: []Artifact{
			{Name: ArtifactRoot, URL: "https://updates.example/v/root.squashfs", Length: 1 << 20, SHA256: sha256.Sum256([]byte("root"))},
			{Name: ArtifactBoot, URL: "https://updates.example/v/boot.img?x=1&y=2", Length: 4096, SHA256: sha256.Sum256([]byte("boot"))},
		},
		Expires: now.Add(7 * 24 * time.Hour),
	}
}

func sign(t testing.TB, m Manifest, privs ...ed25519.PrivateKey) []byte {
	t.Helper()
	b, err := SignManifest(privs, m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func state(floor uint64) State {
	return State{Floor: floor, KeysVersion: 1, Target: TargetAMD64, Now: now}
}

// rewrite changes a document's envelope without re-signing it.
func rewrite(t testing.TB, doc []byte, signed func([]byte) []byte, sigs func([]signature) []signature) []byte {
	t.Helper()
	env, err := parseEnvelope(doc)
	if err != nil {
		t.Fatal(err)
	}
	raw, list := []byte(env.Signed), env.Signatures
	if signed != nil {
		raw = signed(raw)
	}
	if sigs != nil {
		list = sigs(list)
	}
	lb, _ := json.Marshal(list)
	return fmt.Appendf(nil, `{"signed":%s,"signatures":%s}`, raw, lb)
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if want == nil && err != nil {
		t.Fatalf("refused: %v", err)
	}
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	if err != nil {
		t.Logf("refused as expected: %v", err)
	}
}

func TestAccepts(t *testing.T) {
	f := newFleet()
	kd := f.keysDoc(t, 1, 1, 0, 1)
	m, err := Verify(f.root, kd, sign(t, release(2), f.relPrivs[0]), state(1))
	if err != nil {
		t.Fatal(err)
	}
	want := release(2)
	a, err := m.Artifact(ArtifactBoot)
	if err != nil || a != want.Artifacts[1] || m.Version != 2 || !m.Expires.Equal(want.Expires) {
		t.Fatalf("got %+v %v", m, err)
	}
}

func TestArbitrarySoftware(t *testing.T) {
	f := newFleet()
	kd := f.keysDoc(t, 1, 1, 0)
	good := sign(t, release(2), f.relPrivs[0])
	_, attacker := detKeys("attacker", 1)
	forgedKeys, err := SignKeys(attacker, KeysDocument{Version: 9, Expires: now.Add(time.Hour), Threshold: 1, Keys: []ed25519.PublicKey{attacker[0].Public().(ed25519.PublicKey)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		keys, mf []byte
		want     error
	}{
		{"unsigned", kd, rewrite(t, good, nil, func([]signature) []signature { return nil }), ErrSignature},
		{"no signatures member", kd, rewrite(t, good, nil, nil)[:bytes.Index(good, []byte(`,"signatures"`))], ErrMalformed},
		{"signed by an attacker key", kd, sign(t, release(2), attacker...), ErrUnknownKey},
		{"signed by a root key", kd, sign(t, release(2), f.rootPrivs...), ErrUnknownKey},
		{"signed by a release key not listed", kd, sign(t, release(2), f.relPrivs[1]), ErrUnknownKey},
		{"attacker's own keys document", forgedKeys, sign(t, release(2), attacker...), ErrUnknownKey},
		{"body changed after signing", kd, rewrite(t, good, func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"version":2`), []byte(`"version":3`), 1)
		}, nil), ErrSignature},
		{"url changed after signing", kd, rewrite(t, good, func(b []byte) []byte {
			return bytes.Replace(b, []byte("updates.example"), []byte("evil.example"), 1)
		}, nil), ErrSignature},
		{"signed bytes re-encoded", kd, rewrite(t, good, func(b []byte) []byte {
			var out bytes.Buffer
			json.Indent(&out, b, "", " ")
			return out.Bytes()
		}, nil), ErrSignature},
		{"signature bit flipped", kd, rewrite(t, good, nil, func(s []signature) []signature {
			s[0].Sig[5] ^= 1
			return s
		}), ErrSignature},
		{"signature truncated", kd, rewrite(t, good, nil, func(s []signature) []signature {
			s[0].Sig = s[0].Sig[:40]
			return s
		}), ErrSignature},
		{"keys document signature reused on a manifest", kd, rewrite(t, good, nil, func([]signature) []signature {
			env, _ := parseEnvelope(kd)
			return env.Signatures
		}), ErrUnknownKey},
		{"keys document with an added release key", rewrite(t, kd, func(b []byte) []byte {
			k := attacker[0].Public().(ed25519.PublicKey)
			kb, _ := json.Marshal(k)
			return bytes.Replace(b, []byte(`"keys":[`), append(append([]byte(`"keys":[`), kb...), ','), 1)
		}, nil), sign(t, release(2), attacker...), ErrSignature},
		{"keys document signed by one root key of two", func() []byte {
			b, _ := SignKeys(f.rootPrivs[:1], KeysDocument{Version: 1, Expires: now.Add(time.Hour), Threshold: 1, Keys: f.rel[:1]})
			return b
		}(), good, ErrSignature},
		{"manifest presented as keys document", good, good, ErrUnknownKey},
		{"keys document presented as manifest", kd, kd, ErrUnknownKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(f.root, tc.keys, tc.mf, state(1))
			wantErr(t, err, tc.want)
		})
	}
}

func TestMalformed(t *testing.T) {
	f := newFleet()
	kd := f.keysDoc(t, 1, 1, 0)
	good := sign(t, release(2), f.relPrivs[0])
	env, _ := parseEnvelope(good)
	body := string(env.Signed)
	// signedAs signs any bytes as a manifest body, so strictness behind the
	// signature check is tested too.
	signedAs := func(raw string) []byte {
		b, err := seal(kindManifest, []byte(raw), nil, f.relPrivs[:1])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	edit := func(old, new string) []byte {
		if !strings.Contains(body, old) {
			t.Fatalf("%q not in %s", old, body)
		}
		return signedAs(strings.Replace(body, old, new, 1))
	}
	for _, tc := range []struct {
		name string
		mf   []byte
	}{
		{"empty", nil},
		{"not JSON", []byte("release v2 please")},
		{"array", []byte("[]")},
		{"trailing data", append(bytes.Clone(good), " {}"...)},
		{"unknown envelope member", bytes.Replace(good, []byte(`"signatures"`), []byte(`"x":1,"signatures"`), 1)},
		{"duplicate envelope member", bytes.Replace(good, []byte(`"signatures"`), []byte(`"signed":{},"signatures"`), 1)},
		{"too large", append(bytes.Clone(good[:len(good)-1]), strings.Repeat(" ", MaxSize)+"}"...)},
		{"invalid UTF-8", bytes.Replace(good, []byte("updates"), []byte("upd\xffates"), 1)},
		{"signed is null", []byte(`{"signed":null,"signatures":[]}`)},
		{"signed is a string", []byte(`{"signed":"{}","signatures":[]}`)},
		{"nested too deep", []byte(`{"signed":{"a":[[[[[[[[1]]]]]]]]},"signatures":[]}`)},
		{"too many signatures", []byte(`{"signed":{},"signatures":[` + strings.Repeat(`{"keyid":"","sig":""},`, MaxSignatures) + `{"keyid":"","sig":""}]}`)},
		{"unknown member", edit(`"version":2`, `"version":2,"priority":1`)},
		{"duplicate member", edit(`"version":2`, `"version":2,"version":3`)},
		{"member name in other case", edit(`"version":2`, `"Version":2`)},
		{"member name with Kelvin sign", edit(`"target"`, `"\u212aarget"`)},
		{"wrong type", edit(`"type":"manifest"`, `"type":"keys"`)},
		{"no type", edit(`"type":"manifest",`, ``)},
		{"version zero", edit(`"version":2`, `"version":0`)},
		{"version negative", edit(`"version":2`, `"version":-2`)},
		{"version float", edit(`"version":2`, `"version":2.0`)},
		{"version exponent", edit(`"version":2`, `"version":2e0`)},
		{"version too big", edit(`"version":2`, `"version":18446744073709551616`)},
		{"version as string", edit(`"version":2`, `"version":"2"`)},
		{"no expiry", edit(`,"expires":"2030-01-09T03:04:05Z"`, ``)},
		{"expiry not RFC 3339", edit(`"2030-01-09T03:04:05Z"`, `"9 Jan 2030"`)},
		{"no artifacts", signedAs(`{"type":"manifest","version":2,"target":"amd64","artifacts":[],"expires":"2030-01-09T03:04:05Z"}`)},
		{"artifacts null", signedAs(`{"type":"manifest","version":2,"target":"amd64","artifacts":null,"expires":"2030-01-09T03:04:05Z"}`)},
		{"artifact twice", edit(`"name":"boot"`, `"name":"root"`)},
		{"artifact name with slash", edit(`"name":"boot"`, `"name":"../boot"`)},
		{"http url", edit(`https://updates.example/v/root`, `http://updates.example/v/root`)},
		{"file url", edit(`https://updates.example/v/root.squashfs`, `file:///dev/sda`)},
		{"relative url", edit(`https://updates.example/v/root.squashfs`, `/v/root.squashfs`)},
		{"url with credentials", edit(`https://updates.example/v/root`, `https://u:p@updates.example/v/root`)},
		{"length zero", edit(`"length":4096`, `"length":0`)},
		{"length negative", edit(`"length":4096`, `"length":-1`)},
		{"sha256 upper case", edit(`"sha256":"`+fmt.Sprint(release(2).Artifacts[0].SHA256), `"sha256":"`+strings.ToUpper(fmt.Sprint(release(2).Artifacts[0].SHA256)))},
		{"sha256 short", edit(`"sha256":"`+fmt.Sprint(release(2).Artifacts[0].SHA256), `"sha256":"ab`)},
		{"sha256 zero", edit(`"sha256":"`+fmt.Sprint(release(2).Artifacts[0].SHA256), `"sha256":"`+strings.Repeat("0", 64))},
		{"target empty", edit(`"target":"amd64"`, `"target":""`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(f.root, kd, tc.mf, state(1))
			wantErr(t, err, ErrMalformed)
		})
	}
}

func TestRollback(t *testing.T) {
	f := newFleet()
	kd := f.keysDoc(t, 1, 1, 0)
	for _, tc := range []struct {
		version, floor uint64
		want           error
	}{
		{1, 5, ErrRollback},
		{4, 5, ErrRollback},
		{5, 5, ErrRollback}, // reinstalling the installed version is refused too
		{6, 5, nil},
		{1 << 63, 1<<63 - 1, nil},
	} {
		t.Run(fmt.Sprintf("v%d/floor%d", tc.version, tc.floor), func(t *testing.T) {
			_, err := Verify(f.root, kd, sign(t, release(tc.version), f.relPrivs[0]), state(tc.floor))
			wantErr(t, err, tc.want)
		})
	}
}

func TestFreeze(t *testing.T) {
	f := newFleet()
	kd := f.keysDoc(t, 1, 1, 0)
	old := release(2)
	old.Expires = now.Add(-time.Second)
	atNow := release(2)
	atNow.Expires = now
	staleKeys, err := SignKeys(f.rootPrivs, KeysDocument{Version: 1, Expires: now.Add(-time.Hour), Threshold: 1, Keys: f.rel[:1]})
	if err != nil {
		t.Fatal(err)
	}
	noClock := state(1)
	noClock.Now = time.Time{}
	for _, tc := range []struct {
		name     string
		keys, mf []byte
		st       State
		want     error
	}{
		{"expired manifest", kd, sign(t, old, f.relPrivs[0]), state(1), ErrExpired},
		{"manifest expiring now", kd, sign(t, atNow, f.relPrivs[0]), state(1), ErrExpired},
		{"expired keys document", staleKeys, sign(t, release(2), f.relPrivs[0]), state(1), ErrExpired},
		{"no trusted clock", kd, sign(t, release(2), f.relPrivs[0]), noClock, ErrExpired},
		{"valid", kd, sign(t, release(2), f.relPrivs[0]), state(1), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(f.root, tc.keys, tc.mf, tc.st)
			wantErr(t, err, tc.want)
		})
	}
}

func TestMixAndMatch(t *testing.T) {
	f := newFleet()
	kd := f.keysDoc(t, 1, 1, 0)
	rootOnly := release(3)
	rootOnly.Artifacts = rootOnly.Artifacts[:1]
	m, err := Verify(f.root, kd, sign(t, rootOnly, f.relPrivs[0]), state(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Artifact(ArtifactRoot); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{ArtifactBoot, "kernel", "", "ROOT"} {
		_, err := m.Artifact(name)
		wantErr(t, err, ErrNotSigned)
	}
	// Splicing v2's boot artifact into v3's signed set breaks the signature.
	v2 := sign(t, release(2), f.relPrivs[0])
	env2, _ := parseEnvelope(v2)
	var b2 manifestBody
	if err := json.Unmarshal(env2.Signed, &b2); err != nil {
		t.Fatal(err)
	}
	boot, _ := json.Marshal(b2.Artifacts[1])
	spliced := rewrite(t, sign(t, rootOnly, f.relPrivs[0]), func(b []byte) []byte {
		return bytes.Replace(b, []byte("}],"), append(append([]byte("},"), boot...), "],"...), 1)
	}, nil)
	_, err = Verify(f.root, kd, spliced, state(1))
	wantErr(t, err, ErrSignature)
}

func TestWrongHardware(t *testing.T) {
	f := newFleet()
	kd := f.keysDoc(t, 1, 1, 0)
	pi := release(2)
	pi.Target = TargetRPi
	for _, tc := range []struct {
		name   string
		m      Manifest
		target string
		want   error
	}{
		{"rpi release on amd64", pi, TargetAMD64, ErrTarget},
		{"amd64 release on rpi", release(2), TargetRPi, ErrTarget},
		{"box target unknown", release(2), "", ErrTarget},
		{"rpi on rpi", pi, TargetRPi, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := state(1)
			st.Target = tc.target
			_, err := Verify(f.root, kd, sign(t, tc.m, f.relPrivs[0]), st)
			wantErr(t, err, tc.want)
		})
	}
}

func TestRevokedReleaseKey(t *testing.T) {
	f := newFleet()
	v1 := f.keysDoc(t, 1, 1, 0, 1) // release keys 0 and 1
	byKey0 := sign(t, release(2), f.relPrivs[0])
	if _, err := Verify(f.root, v1, byKey0, state(1)); err != nil {
		t.Fatal(err)
	}
	// Key 0 leaks: the root rotates it out.
	v2, err := SignKeys(f.rootPrivs[1:], KeysDocument{Version: 2, Expires: now.Add(time.Hour), Threshold: 1,
		Keys: f.rel[1:2], Revoked: []string{KeyID(f.rel[0])}})
	if err != nil {
		t.Fatal(err)
	}
	v3 := f.keysDoc(t, 3, 1, 1) // drops the revoked list
	st2 := state(1)
	st2.KeysVersion = 2
	for _, tc := range []struct {
		name     string
		keys, mf []byte
		st       State
		want     error
	}{
		{"revoked key", v2, byKey0, st2, ErrRevokedKey},
		{"revoked and no longer listed", v3, byKey0, st2, ErrUnknownKey},
		{"revoked key plus a duplicate of it", v2, rewrite(t, byKey0, nil, func(s []signature) []signature { return append(s, s[0]) }), st2, ErrRevokedKey},
		{"old keys document still listing the key", v1, byKey0, st2, ErrRollback},
		{"re-signed by the remaining key", v2, sign(t, release(2), f.relPrivs[1]), st2, nil},
		{"signed by both", v2, sign(t, release(2), f.relPrivs[0], f.relPrivs[1]), st2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(f.root, tc.keys, tc.mf, tc.st)
			wantErr(t, err, tc.want)
		})
	}
}

func TestThreshold(t *testing.T) {
	f := newFleet()
	kd := f.keysDoc(t, 1, 2, 0, 1, 2) // 2 of 3 release keys
	_, attacker := detKeys("attacker", 1)
	m := release(2)
	dup := func(doc []byte) []byte {
		return rewrite(t, doc, nil, func(s []signature) []signature { return append(s, s[0], s[0]) })
	}
	badSecond := rewrite(t, sign(t, m, f.relPrivs[0], f.relPrivs[1]), nil, func(s []signature) []signature {
		s[1].Sig[0] ^= 1
		return s
	})
	goodAfterBad := rewrite(t, sign(t, m, f.relPrivs[0], f.relPrivs[1]), nil, func(s []signature) []signature {
		bad := signature{KeyID: s[1].KeyID, Sig: bytes.Clone(s[1].Sig)}
		bad.Sig[0] ^= 1
		return []signature{s[0], bad, s[1]}
	})
	for _, tc := range []struct {
		name string
		mf   []byte
		want error
	}{
		{"none", sign(t, m), ErrSignature},
		{"one of two", sign(t, m, f.relPrivs[2]), ErrSignature},
		{"one key three times", dup(sign(t, m, f.relPrivs[0])), ErrSignature},
		{"one good one bad", badSecond, ErrSignature},
		{"one good one unknown", sign(t, m, f.relPrivs[0], attacker[0]), ErrUnknownKey},
		{"two", sign(t, m, f.relPrivs[0], f.relPrivs[2]), nil},
		{"three", sign(t, m, f.relPrivs...), nil},
		{"two with duplicates", dup(sign(t, m, f.relPrivs[1], f.relPrivs[2])), nil},
		{"two plus an unknown", sign(t, m, attacker[0], f.relPrivs[0], f.relPrivs[1]), nil},
		{"bad then good signature by the same key", goodAfterBad, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(f.root, kd, tc.mf, state(1))
			wantErr(t, err, tc.want)
		})
	}

	// The root's own threshold (2 of 3) applies to the keys document.
	doc := KeysDocument{Version: 1, Expires: now.Add(time.Hour), Threshold: 1, Keys: f.rel[:1]}
	one, _ := SignKeys(f.rootPrivs[2:], doc)
	oneTwice := rewrite(t, one, nil, func(s []signature) []signature { return append(s, s[0]) })
	cosigned, err := Cosign(one, f.rootPrivs[0], f.rootPrivs[2])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		kd   []byte
		want error
	}{
		{"root: one of two", one, ErrSignature},
		{"root: one key twice", oneTwice, ErrSignature},
		{"root: cosigned to two", cosigned, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyKeys(f.root, tc.kd, state(1))
			wantErr(t, err, tc.want)
		})
	}
	if _, ids, _ := ParseKeysUnverified(cosigned); len(ids) != 2 {
		t.Fatalf("cosign added a signature twice: %v", ids)
	}
}

func TestKeysRollback(t *testing.T) {
	f := newFleet()
	for _, tc := range []struct {
		version, stored uint64
		want            error
	}{
		{4, 5, ErrRollback},
		{1, 5, ErrRollback},
		{5, 5, nil}, // the same document again
		{6, 5, nil},
	} {
		t.Run(fmt.Sprintf("v%d/stored%d", tc.version, tc.stored), func(t *testing.T) {
			st := state(1)
			st.KeysVersion = tc.stored
			kd := f.keysDoc(t, tc.version, 1, 0)
			k, err := VerifyKeys(f.root, kd, st)
			wantErr(t, err, tc.want)
			if err == nil && k.Version != tc.version {
				t.Fatalf("version %d", k.Version)
			}
			_, err = Verify(f.root, kd, sign(t, release(2), f.relPrivs[0]), st)
			wantErr(t, err, tc.want)
		})
	}
}

func TestBadRootOfTrust(t *testing.T) {
	f := newFleet()
	kd := f.keysDoc(t, 1, 1, 0)
	for _, root := range []RootOfTrust{
		{},
		{Keys: f.root.Keys, Threshold: 0},
		{Keys: f.root.Keys, Threshold: 4},
		{Keys: []ed25519.PublicKey{f.root.Keys[0], f.root.Keys[0]}, Threshold: 2},
		{Keys: []ed25519.PublicKey{f.root.Keys[0][:31]}, Threshold: 1},
	} {
		if _, err := VerifyKeys(root, kd, state(1)); err == nil {
			t.Errorf("accepted root %+v", root)
		}
	}
}

func TestSigning(t *testing.T) {
	root, privs, err := NewRootKeys(3, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := NewRootKeys(2, 3); err == nil {
		t.Fatal("threshold above n accepted")
	}
	// The root of trust round-trips through JSON (the fleet file).
	b, _ := json.Marshal(root)
	var back RootOfTrust
	if err := json.Unmarshal(b, &back); err != nil || back.Threshold != 2 || !back.Keys[2].Equal(root.Keys[2]) {
		t.Fatalf("%s: %+v %v", b, back, err)
	}
	rel, relPrivs, _ := NewRootKeys(1, 1)
	kd, err := SignKeys(privs[1:], KeysDocument{Version: 1, Expires: now.Add(time.Hour), Threshold: 1, Keys: rel.Keys})
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := SignManifest(nil, release(2))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := Cosign(unsigned, relPrivs[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(back, kd, mf, state(1)); err != nil {
		t.Fatal(err)
	}
	m, ids, err := ParseManifestUnverified(mf)
	if err != nil || m.Version != 2 || len(ids) != 1 || ids[0] != KeyID(rel.Keys[0]) {
		t.Fatalf("%+v %v %v", m, ids, err)
	}
	bad := release(2)
	bad.Artifacts[0].URL = "http://x/"
	if _, err := SignManifest(relPrivs, bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("signed an invalid manifest: %v", err)
	}
	if _, err := SignKeys(privs, KeysDocument{Version: 1, Expires: now, Threshold: 2, Keys: rel.Keys}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("signed an unsatisfiable keys document: %v", err)
	}
}
