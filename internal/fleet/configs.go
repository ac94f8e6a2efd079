package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/outpost-gw/outpost/internal/config"
)

// DesiredConfig is the config the operator wants a box to run, with a
// version that increases with every change.
type DesiredConfig struct {
	Version uint64          `json:"version"`
	Config  json.RawMessage `json:"config"`
}

func (f *Fleet) configPath(device string) string {
	return filepath.Join(f.Dir, "configs", device+".json")
}

// Desired returns the desired config of a box (ok false if none was set).
func (f *Fleet) Desired(device string) (DesiredConfig, bool, error) {
	if err := checkID(device); err != nil {
		return DesiredConfig{}, false, err
	}
	b, err := os.ReadFile(f.configPath(device))
	if errors.Is(err, fs.ErrNotExist) {
		return DesiredConfig{}, false, nil
	}
	if err != nil {
		return DesiredConfig{}, false, err
	}
	var d DesiredConfig
	if err := json.Unmarshal(b, &d); err != nil {
		return DesiredConfig{}, false, fmt.Errorf("%s: %w", f.configPath(device), err)
	}
	return d, true, nil
}

// SetDesired validates doc as a daemon config (the box would refuse what
// does not validate) and stores it as the box's next desired version.
func (f *Fleet) SetDesired(device string, doc []byte) (DesiredConfig, error) {
	if _, err := config.Parse(doc); err != nil {
		return DesiredConfig{}, fmt.Errorf("config for %s: %w", device, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, _, err := f.Desired(device)
	if err != nil {
		return DesiredConfig{}, err
	}
	d := DesiredConfig{Version: cur.Version + 1, Config: json.RawMessage(doc)}
	if err := os.MkdirAll(filepath.Dir(f.configPath(device)), 0o700); err != nil {
		return DesiredConfig{}, err
	}
	if err := f.writeJSON(filepath.Join("configs", device+".json"), d, 0o600); err != nil {
		return DesiredConfig{}, err
	}
	return d, nil
}

// Group lists the ids of the (unrevoked) boxes in a group.
func (f *Fleet) Group(name string) ([]string, error) {
	devs, err := f.Devices()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, d := range devs {
		if d.Group == name && d.Revoked == nil {
			ids = append(ids, d.ID)
		}
	}
	return ids, nil
}

func checkID(device string) error {
	if device == "" || len(device) > 64 {
		return fmt.Errorf("bad device id %q", device)
	}
	for _, r := range device {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("bad device id %q", device)
		}
	}
	return nil
}
