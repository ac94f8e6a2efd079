package daemon

import (
	"context"
	"errors"

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
	source := ""
	if req.Remote != nil {
		source = req.Remote.String()
	}
	v := d.verifier()
	if v == nil {
		d.audit(ctx, "token:", tokens.ActionLive+" rtsp", req.Camera, source, "denied: no fleet key")
		return errors.New("viewer access needs a fleet key")
	}
	claims, err := v.Verify(req.Token)
	if err == nil {
		err = claims.Grants(req.Camera, tokens.ActionLive)
	}
	if err != nil {
		d.audit(ctx, "token:"+claims.User, tokens.ActionLive+" rtsp", req.Camera, source, "denied: "+err.Error())
		if errors.Is(err, tokens.ErrMalformed) || errors.Is(err, tokens.ErrSignature) || errors.Is(err, tokens.ErrExpired) || errors.Is(err, tokens.ErrNotYetValid) {
			return errors.Join(live.ErrUnauthorized, err)
		}
		return err
	}
	d.audit(ctx, claims.User, tokens.ActionLive+" rtsp", req.Camera, source+" rtsp", "ok")
	return nil
}
