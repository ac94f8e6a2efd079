package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"

	bolt "go.etcd.io/bbolt"

	"github.com/outpost-gw/outpost/internal/config"
	"github.com/outpost-gw/outpost/internal/store"
)

// cameraLogin is a camera's RTSP login. It lives in the store only: the
// running config, the pushed config file, logs, status, telemetry and
// audit see the camera's URL without userinfo.
type cameraLogin struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

var cameraLogins = store.NewBucket[cameraLogin]("camera_logins")

// splitLogin takes the login out of a camera's config: the URL's userinfo,
// overridden by the username and password fields. It returns the camera
// with neither, and whether it had a login.
func splitLogin(cc config.Camera) (config.Camera, cameraLogin, bool) {
	var l cameraLogin
	if u, err := url.Parse(cc.URL); err == nil && u.User != nil {
		l.Username = u.User.Username()
		l.Password, _ = u.User.Password()
		u.User = nil
		cc.URL = u.String()
	}
	if cc.Username != "" {
		l.Username = cc.Username
	}
	if cc.Password != "" {
		l.Password = cc.Password
	}
	cc.Username, cc.Password = "", ""
	return cc, l, l != cameraLogin{}
}

// takeCameraLogins moves the cameras' logins out of d.cfg into the store
// (a login in the config replaces the stored one) and returns every
// configured camera's login, from the config or, when the config has
// none (a pushed config is saved without them), from the store. Logins of
// cameras no longer configured are deleted.
func (d *daemon) takeCameraLogins() (map[string]cameraLogin, error) {
	cams := make([]config.Camera, len(d.cfg.Recorder.Cameras)) // d.cfg may share the slice with the caller's config
	given := map[string]cameraLogin{}
	for i, cc := range d.cfg.Recorder.Cameras {
		var l cameraLogin
		var ok bool
		if cams[i], l, ok = splitLogin(cc); ok {
			given[cc.ID] = l
		}
	}
	d.cfg.Recorder.Cameras = cams
	out := map[string]cameraLogin{}
	var changed, removed []string
	err := d.st.Update(func(tx *bolt.Tx) error {
		var stale []string
		err := cameraLogins.ForEach(tx, func(id string, _ cameraLogin) error {
			stale = append(stale, id)
			return nil
		})
		if err != nil {
			return err
		}
		configured := map[string]bool{}
		for _, cc := range cams {
			configured[cc.ID] = true
			stored, err := cameraLogins.Get(tx, cc.ID)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			l, ok := given[cc.ID]
			switch {
			case ok && l != stored:
				if err := cameraLogins.Put(tx, cc.ID, l); err != nil {
					return err
				}
				changed = append(changed, cc.ID)
			case !ok:
				l = stored
			}
			if l != (cameraLogin{}) {
				out[cc.ID] = l
			}
		}
		for _, id := range stale {
			if !configured[id] {
				if err := cameraLogins.Delete(tx, id); err != nil {
					return err
				}
				removed = append(removed, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("camera logins: %w", err)
	}
	for _, id := range changed {
		d.log.Info("camera login kept in the store", "camera", id)
		d.audit(context.Background(), "system", "store camera login", id, "", "ok")
	}
	for _, id := range removed {
		d.audit(context.Background(), "system", "delete camera login", id, "", "camera no longer configured")
	}
	return out, nil
}

// scrubPushedConfig moves the camera logins of a pushed config document
// (already validated) into the store and returns the document to write
// to disk: unchanged when it has none, else re-encoded without them.
func (d *daemon) scrubPushedConfig(doc []byte) ([]byte, error) {
	cfg, err := config.Parse(doc)
	if err != nil {
		return nil, err
	}
	logins := map[string]cameraLogin{}
	for i, cc := range cfg.Recorder.Cameras {
		var l cameraLogin
		var ok bool
		if cfg.Recorder.Cameras[i], l, ok = splitLogin(cc); ok {
			logins[cc.ID] = l
		}
	}
	if len(logins) == 0 {
		return doc, nil
	}
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := config.Parse(out); err != nil { // must load as it was pushed
		return nil, fmt.Errorf("pushed config without camera logins: %w", err)
	}
	err = d.st.Update(func(tx *bolt.Tx) error {
		for id, l := range logins {
			if err := cameraLogins.Put(tx, id, l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("camera logins: %w", err)
	}
	return out, nil
}
