package daemon

import (
	"context"
	"errors"
	"net/http"

	"github.com/outpost-gw/outpost/internal/access"
	"github.com/outpost-gw/outpost/internal/tokens"
	"github.com/outpost-gw/outpost/recorder/live"
)

// startLive starts the RTSP restream server when recorder.live_rtsp_addr is
// set; nil otherwise.
func (d *daemon) startLive() (*live.Server, error) {
	addr := d.cfg.Recorder.LiveRTSPAddr
	if addr == "" {
		return nil, nil
	}
	return live.NewServer(live.Config{Addr: addr, Authorize: d.authorizeLive, Log: d.log.With("component", "live")})
}

// authorizeLive is the RTSP viewers' gate: the same fleet-signed viewer
// token as the HTTPS APIs, for this box, the camera and the live action.
// Every grant and refusal is audited (once per RTSP session: DESCRIBE or
// SETUP). On-premise modes extend this hook.
func (d *daemon) authorizeLive(ctx context.Context, req live.AuthRequest) error {
	g := Grant{Path: access.PathRTSP, Action: tokens.ActionLive, Camera: req.Camera, What: tokens.ActionLive + " rtsp"}
	if req.Remote != nil {
		g.Source = req.Remote.String() + " rtsp"
		g.Remote = access.RemoteAddr(req.Remote.String())
	}
	if v := d.verifier(); req.InURL && v != nil {
		if c, err := tokens.Parse(req.Token, v.Key); err == nil && !c.SingleUse {
			d.audit(ctx, "token:"+c.User, g.What, g.Camera, g.Source, "denied: "+errTokenInURL.Error())
			return errTokenInURL
		}
	}
	if _, err := d.authorize(ctx, req.Token, g); err != nil {
		if errors.Is(err, errUnauthenticated) {
			return errors.Join(live.ErrUnauthorized, err)
		}
		return err
	}
	return nil
}

// handleHLS serves GET /api/v1/live/{camera}/{file}: the camera as HLS for
// browsers (the LAN page plays index.m3u8). viewerOn has checked the token
// and the camera's live mode for the HLS path on every request.
func (d *daemon) handleHLS(w http.ResponseWriter, r *http.Request) {
	d.rec.hls.ServeFile(w, r, r.PathValue("camera"), r.PathValue("file"))
}
