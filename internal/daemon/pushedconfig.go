package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/internal/atomicfile"
	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/store"
)

// PushedConfigFile is where a config pushed by the fleet is kept; when it
// exists it replaces the -config file of the image.
const PushedConfigFile = "config.json"

// ErrRestart is how the daemon restarts its components after a change that
// needs it (a pushed config); Run handles it itself.
var ErrRestart = errors.New("restart requested")

type appliedConfig struct {
	Version uint64 `json:"version"`
}

var configBucket = store.NewBucket[appliedConfig]("config")

func (d *daemon) appliedConfigVersion() (uint64, error) {
	var v uint64
	err := d.st.View(func(tx *bolt.Tx) error {
		a, err := configBucket.Get(tx, "applied")
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		v = a.Version
		return err
	})
	return v, err
}

// savePushedConfig writes the file first, then the version: after a power
// cut in between, the box runs the new config and accepts the same version
// once more, which is harmless.
func (d *daemon) savePushedConfig(version uint64, doc []byte) error {
	if err := atomicfile.WriteFile(filepath.Join(d.o.DataDir, PushedConfigFile), doc, 0o600); err != nil {
		return err
	}
	return d.st.Update(func(tx *bolt.Tx) error {
		return configBucket.Put(tx, "applied", appliedConfig{Version: version})
	})
}

// pushedConfig returns the config the fleet pushed, if any.
func pushedConfig(dataDir string) (*config.Config, error) {
	p := filepath.Join(dataDir, PushedConfigFile)
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	c, err := config.Load(p)
	if err != nil {
		return nil, fmt.Errorf("pushed config: %w", err)
	}
	return &c, nil
}
