package daemon

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/outpost-gw/outpost/internal/tokens"
)

// viewer guards the camera and recording APIs: every request carries a
// fleet-signed viewer token (Authorization: Bearer, or ?token= for players
// that cannot set headers), verified offline against the fleet key baked
// into the image, for this box, the camera asked for and the action.
// Refusals are audited. Without a fleet key the APIs are closed.
func (d *daemon) viewer(action string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v := d.verifier()
		if v == nil {
			httpError(w, http.StatusForbidden, "viewer access needs a fleet key (this box has no fleet file)")
			return
		}
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if tok == "" {
			tok = r.URL.Query().Get("token")
		}
		if tok == "" {
			httpError(w, http.StatusUnauthorized, "a viewer token is required (outpost fleet token)")
			return
		}
		claims, err := v.Verify(tok)
		if err == nil {
			err = claims.Grants(r.URL.Query().Get("camera"), action)
		}
		if err != nil {
			code := http.StatusForbidden
			if errors.Is(err, tokens.ErrMalformed) || errors.Is(err, tokens.ErrSignature) || errors.Is(err, tokens.ErrExpired) || errors.Is(err, tokens.ErrNotYetValid) {
				code = http.StatusUnauthorized
			}
			d.audit(r.Context(), "token:"+claims.User, action+" "+r.URL.Path, r.URL.Query().Get("camera"), r.RemoteAddr, "denied: "+err.Error())
			httpError(w, code, "%v", err)
			return
		}
		d.audit(r.Context(), claims.User, action+" "+r.URL.Path, r.URL.Query().Get("camera"), r.RemoteAddr+" "+r.UserAgent(), "ok")
		next(w, r)
	}
}

// verifier is nil without a fleet public key.
func (d *daemon) verifier() *tokens.Verifier {
	if d.fleet == nil || d.fleet.PublicKey == "" {
		return nil
	}
	k, err := base64.StdEncoding.DecodeString(d.fleet.PublicKey)
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil
	}
	dev := ""
	if d.cloud != nil {
		dev = d.cloud.id.DeviceID()
	}
	return &tokens.Verifier{Key: ed25519.PublicKey(k), Device: dev, Now: time.Now, Used: &tokens.StoreUsed{Store: d.st, Now: time.Now}}
}
