package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/cloudlink/wire"
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
//
// Camera logins in it go to the store, not into the file.
func (d *daemon) savePushedConfig(version uint64, doc []byte) error {
	doc, err := d.scrubPushedConfig(doc)
	if err != nil {
		return err
	}
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

// Files a pushed config that failed at start leaves behind.
const (
	FailedConfigFile   = "config.json.failed"
	failedConfigReason = "config.failed.txt"
)

// setAsidePushedConfig moves the pushed config out of the way after the
// daemon failed to start on it (cause), keeping the reason for the next
// start to report. It reports false when no pushed config was in use.
func setAsidePushedConfig(dataDir string, cause error) (bool, error) {
	p := filepath.Join(dataDir, PushedConfigFile)
	if _, err := os.Stat(p); err != nil {
		return false, nil
	}
	if err := atomicfile.WriteFile(filepath.Join(dataDir, failedConfigReason), []byte(cause.Error()), 0o600); err != nil {
		return false, err
	}
	if err := os.Rename(p, filepath.Join(dataDir, FailedConfigFile)); err != nil {
		return false, err
	}
	if dir, err := os.Open(dataDir); err == nil {
		dir.Sync()
		dir.Close()
	}
	return true, nil
}

// reportFailedConfig audits and reports (an event) a pushed config that
// was set aside because the daemon could not start on it.
func (d *daemon) reportFailedConfig(ctx context.Context) {
	p := filepath.Join(d.o.DataDir, failedConfigReason)
	b, err := os.ReadFile(p)
	if err != nil {
		return
	}
	msg := "the config pushed by the fleet failed at start; running the image's config: " + string(b)
	d.log.Error("pushed config set aside", "reason", string(b), "file", filepath.Join(d.o.DataDir, FailedConfigFile))
	d.audit(ctx, "system", "config", "config", "", "fell back: "+string(b))
	if d.cloud != nil {
		d.cloud.event(ctx, "config_failed", wire.SeverityCritical, msg, nil)
	}
	os.Remove(p)
}
