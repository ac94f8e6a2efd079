package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	for _, tc := range []struct {
		data string
		perm os.FileMode
	}{
		{"first", 0o600},
		{"second, longer content", 0o644},
		{"", 0o600},
	} {
		if err := WriteFile(p, []byte(tc.data), tc.perm); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != tc.data {
			t.Fatalf("ReadFile = %q, %v; want %q", got, err, tc.data)
		}
		st, _ := os.Stat(p)
		if st.Mode().Perm() != tc.perm {
			t.Errorf("perm = %v, want %v", st.Mode().Perm(), tc.perm)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temp files left behind: %v", ents)
	}
}

func TestWriteFileMissingDir(t *testing.T) {
	if err := WriteFile(filepath.Join(t.TempDir(), "nope", "x"), nil, 0o600); err == nil {
		t.Fatal("want error for missing directory")
	}
}
