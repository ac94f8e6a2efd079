package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/outpost-gw/outpost/internal/access"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/ota/install"
	"github.com/outpost-gw/outpost/ota/manifest"
)

// maxOfferBody bounds POST /api/v1/update: two signed documents of at most
// manifest.MaxSize each, plus multipart framing.
const maxOfferBody = 2*manifest.MaxSize + 16<<10

// lanUpdate is POST /api/v1/update: an offer handed to the box as files on
// the LAN (the signed keys document and manifest, as `outpost release sign`
// wrote them), for a box whose fleet link is down or that an installer
// updates on site. The token must grant admin; the CSRF gate covers the
// POST. The offer goes to the same installer as the cloud "update" command:
// verified against the pinned root before anything is fetched (the refusal
// is the answer, 422), then installed in the background; progress shows in
// /api/v1/status ("update") and as ota events on the cloud link.
//
// Body: multipart/form-data with the parts "keys" and "manifest", or
// application/msgpack {keys: bytes, manifest: bytes} as in the command.
func (d *daemon) lanUpdate() http.HandlerFunc {
	return d.viewerOn(access.PathLAN, tokens.ActionAdmin, func(*http.Request) string { return "" }, d.handleUpdateOffer)
}

func (d *daemon) handleUpdateOffer(w http.ResponseWriter, r *http.Request) {
	claims, _ := r.Context().Value(claimsKey{}).(tokens.Claims)
	source := r.RemoteAddr + " " + r.UserAgent()
	result := func(code int, res string, args ...any) {
		msg := fmt.Sprintf(res, args...)
		d.audit(r.Context(), claims.User, "update offer (LAN)", "ota", source, msg)
		if code != http.StatusAccepted {
			httpError(w, code, "%s", msg)
		}
	}
	a, err := readOffer(w, r)
	if err != nil {
		result(http.StatusBadRequest, "refused: %v", err)
		return
	}
	if d.cloud == nil {
		result(http.StatusServiceUnavailable, "refused: updates need the box bound to a fleet")
		return
	}
	in, err := d.cloud.installer(r.Context())
	if err != nil {
		result(http.StatusServiceUnavailable, "refused: %v", err)
		return
	}
	m, err := in.Check(a.Keys, a.Manifest)
	if errors.Is(err, install.ErrAlreadyInstalled) {
		// As on the cloud path: the outcome it had, nothing to do.
		result(http.StatusAccepted, "already installed v%d", m.Version)
		writeJSON(w, map[string]any{"accepted": false, "installed": true, "version": m.Version})
		return
	}
	if err != nil {
		code := http.StatusUnprocessableEntity
		if errors.Is(err, install.ErrBusy) || errors.Is(err, install.ErrTrialBooted) {
			code = http.StatusConflict
		}
		result(code, "refused: %v", err)
		return
	}
	result(http.StatusAccepted, "accepted v%d", m.Version)
	go func() {
		if err := in.Offer(context.WithoutCancel(r.Context()), a.Keys, a.Manifest); err != nil {
			d.log.Warn("ota: update offered on the LAN failed", "err", err)
		}
	}()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	json.NewEncoder(w).Encode(map[string]any{"accepted": true, "version": m.Version})
}

// readOffer reads the two documents of an offer (see lanUpdate).
func readOffer(w http.ResponseWriter, r *http.Request) (updateArgs, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxOfferBody)
	var a updateArgs
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/msgpack":
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return a, err
		}
		if err := msgpack.Unmarshal(b, &a); err != nil {
			return a, fmt.Errorf("body: %w", err)
		}
	case "multipart/form-data":
		mr, err := r.MultipartReader()
		if err != nil {
			return a, err
		}
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return a, err
			}
			var dst *[]byte
			switch p.FormName() {
			case "keys":
				dst = &a.Keys
			case "manifest":
				dst = &a.Manifest
			default:
				return a, fmt.Errorf("unexpected part %q (want keys and manifest)", p.FormName())
			}
			if *dst != nil {
				return a, fmt.Errorf("part %q twice", p.FormName())
			}
			b, err := io.ReadAll(io.LimitReader(p, manifest.MaxSize+1))
			if err != nil {
				return a, err
			}
			if len(b) > manifest.MaxSize {
				return a, fmt.Errorf("part %q is larger than %d bytes", p.FormName(), manifest.MaxSize)
			}
			*dst = b
		}
	default:
		return a, fmt.Errorf("content type %q: send multipart/form-data (keys, manifest) or application/msgpack", ct)
	}
	if len(a.Keys) == 0 || len(a.Manifest) == 0 {
		return a, errors.New("both the keys document and the manifest are needed")
	}
	return a, nil
}
