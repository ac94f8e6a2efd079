package daemon

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/outpost-gw/outpost/internal/access"
	"github.com/outpost-gw/outpost/internal/tokens"
)

// Grant is a viewer's request to see one camera (or, with Camera empty,
// to use an API that names none) by one path.
type Grant struct {
	Path   access.Path
	Action string // a tokens.Action*
	Camera string
	Remote netip.Addr
	// Source is what the audit entry records as "from where" (address,
	// user agent).
	Source string
	// What is the audit entry's action, e.g. "playback GET /api/v1/recordings".
	What string
	// Quiet leaves a grant out of the audit log (refusals are always
	// recorded): a player fetching a segment a second after its playlist
	// was granted is not a new access.
	Quiet bool
}

// errUnauthenticated marks refusals that a new token could fix (HTTP 401)
// rather than ones the token itself rules out (403).
var errUnauthenticated = errors.New("unauthenticated")

// authorize is the one gate in front of video: a fleet-signed viewer token,
// verified offline against the fleet key baked into the image, for this box,
// the camera and the action; then the camera's on-premise modes for the
// path. Every grant and refusal is audited.
func (d *daemon) authorize(ctx context.Context, tok string, g Grant) (tokens.Claims, error) {
	v := d.verifier()
	if v == nil {
		d.audit(ctx, "token:", g.What, g.Camera, g.Source, "denied: no fleet key")
		return tokens.Claims{}, errors.New("viewer access needs a fleet key (this box has no fleet file)")
	}
	if tok == "" {
		// Audited once a minute per source: a page polling after its
		// session ended must not fill the log.
		if d.anon.first(g.Remote, time.Now()) {
			d.audit(ctx, "anonymous", g.What, g.Camera, g.Source, "denied: no viewer token")
		}
		return tokens.Claims{}, errors.Join(errUnauthenticated, errors.New("a viewer token is required (outpost fleet token)"))
	}
	// A single-use token is spent only once the request is allowed: a
	// request for another camera or action must not burn it.
	claims, err := v.Check(tok)
	if err == nil {
		err = claims.Grants(g.Camera, g.Action)
	}
	if err != nil {
		d.audit(ctx, "token:"+claims.User, g.What, g.Camera, g.Source, "denied: "+err.Error())
		if errors.Is(err, tokens.ErrMalformed) || errors.Is(err, tokens.ErrSignature) || errors.Is(err, tokens.ErrExpired) || errors.Is(err, tokens.ErrNotYetValid) {
			err = errors.Join(errUnauthenticated, err)
		}
		return claims, err
	}
	if err := d.decide(g, claims.User); err != nil {
		d.audit(ctx, claims.User, g.What, g.Camera, g.Source, "denied: "+err.Error())
		return claims, err
	}
	if err := v.Spend(claims); err != nil {
		d.audit(ctx, claims.User, g.What, g.Camera, g.Source, "denied: "+err.Error())
		return claims, errors.Join(errUnauthenticated, err)
	}
	if !g.Quiet {
		d.audit(ctx, claims.User, g.What, g.Camera, g.Source, "ok")
	}
	return claims, nil
}

// decide applies the camera's on-premise modes; an API that names no
// camera, and the admin action, pass.
func (d *daemon) decide(g Grant, user string) error {
	if g.Camera == "" {
		return nil
	}
	kind := ""
	switch g.Action {
	case tokens.ActionLive:
		kind = access.KindLive
	case tokens.ActionPlayback, tokens.ActionExport:
		kind = access.KindRecorded
	default:
		return nil
	}
	return access.Decide(d.policy(g.Camera), d.site(), access.Request{Path: g.Path, Kind: kind, User: user, Remote: g.Remote})
}

// policy is a camera's on-premise modes from the running config.
func (d *daemon) policy(camera string) access.Policy {
	for _, c := range d.cfg.Recorder.Cameras {
		if c.ID == camera {
			return c.Policy()
		}
	}
	// Unknown cameras have no video; be strict anyway.
	return access.Policy{Live: access.LiveOnPrem, Recorded: access.RecordedRecordingOnly}
}

var siteCache struct {
	sync.Mutex
	at   time.Time
	site access.Site
}

// site is the site LAN: lan.site_subnets, or the box's own interfaces'
// subnets (read again every few seconds: DHCP may change them).
func (d *daemon) site() access.Site {
	if len(d.cfg.LAN.SiteSubnets) > 0 {
		ps, _ := access.ParsePrefixes(d.cfg.LAN.SiteSubnets) // validated with the config
		return access.Site{Prefixes: ps}
	}
	siteCache.Lock()
	defer siteCache.Unlock()
	if time.Since(siteCache.at) > 5*time.Second {
		ifs, err := access.SystemInterfaces()
		if err != nil {
			d.log.Warn("site LAN", "err", err)
		}
		siteCache.site, siteCache.at = access.DetectSite(ifs), time.Now()
	}
	return siteCache.site
}

// requestToken is the viewer token of an HTTP request: Authorization:
// Bearer, the LAN page's session cookie, or ?token= (inURL) for players
// that cannot set headers.
func (d *daemon) requestToken(r *http.Request) (tok string, inURL bool) {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && tok != "" {
		return tok, false
	}
	if tok := r.URL.Query().Get("token"); tok != "" {
		return tok, true
	}
	return d.sessionToken(r), false
}

// errTokenInURL refuses a reusable token in a URL: URLs end up in browser
// history, proxy and server logs, and shared links. Only a single-use
// token, spent by its first request, may travel there.
var errTokenInURL = errors.New("only a single-use token may be put in a URL (?token=); send a reusable one as Authorization: Bearer, or sign in on the LAN page")

// claimsKey holds the granted token's claims in a request's context.
type claimsKey struct{}

// cameraFromQuery takes the camera from ?camera=.
func cameraFromQuery(r *http.Request) string { return r.URL.Query().Get("camera") }

// cameraFromPath takes the camera from the route's {camera} wildcard.
func cameraFromPath(r *http.Request) string { return r.PathValue("camera") }

// viewer guards an HTTP API on the LAN endpoint (path PathLAN, the camera
// from ?camera=).
func (d *daemon) viewer(action string, next http.HandlerFunc) http.HandlerFunc {
	return d.viewerOn(access.PathLAN, action, cameraFromQuery, next)
}

// viewerOn guards an HTTP handler: the token of the request (see
// requestToken) must grant action on the camera that camera() names, by
// path. Refusals: 401 when a (new) token could help, 403 otherwise.
func (d *daemon) viewerOn(path access.Path, action string, camera func(*http.Request) string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		g := Grant{
			Path: path, Action: action, Camera: camera(r),
			Remote: access.RemoteAddr(r.RemoteAddr),
			Source: r.RemoteAddr + " " + r.UserAgent(),
			What:   action + " " + r.Method + " " + r.URL.Path,
			// An HLS viewing is audited at its index.m3u8; its media
			// playlists and segments follow every second or so.
			Quiet: path == access.PathHLS && r.PathValue("file") != "index.m3u8",
		}
		tok, inURL := d.requestToken(r)
		if v := d.verifier(); inURL && v != nil {
			if c, err := tokens.Parse(tok, v.Key); err == nil && !c.SingleUse {
				// A misuse, not a guess: refused and audited, not counted
				// towards the lockout.
				d.audit(r.Context(), "token:"+c.User, g.What, g.Camera, g.Source, "denied: "+errTokenInURL.Error())
				httpError(w, http.StatusBadRequest, "%v", errTokenInURL)
				return
			}
		}
		claims, err := d.authorize(r.Context(), tok, g)
		if err != nil {
			code := http.StatusForbidden
			if errors.Is(err, errUnauthenticated) {
				code = http.StatusUnauthorized
			}
			if guessed(err) {
				d.noteFailure(r)
			}
			httpError(w, code, "%v", err)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
	}
}

// installerView guards what the installer reads without a token (the
// box's status: no video, but the claim code and the camera list). It is
// open to the site LAN and to the box itself (loopback); from anywhere
// else (a tunnel, a forwarded port) it needs a viewer token with the admin
// action. Off-site grants are audited once a minute per source (the page
// polls every two seconds); refusals always.
func (d *daemon) installerView(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a := access.RemoteAddr(r.RemoteAddr)
		if a.IsLoopback() || d.site().Contains(a) {
			next(w, r)
			return
		}
		tok, _ := d.requestToken(r)
		g := Grant{Path: access.PathLAN, Action: tokens.ActionAdmin, Remote: a,
			Source: r.RemoteAddr + " " + r.UserAgent(), What: "status " + r.Method + " " + r.URL.Path,
			Quiet: !d.statusAudit.first(a, time.Now())}
		if _, err := d.authorize(r.Context(), tok, g); err != nil {
			code := http.StatusForbidden
			if errors.Is(err, errUnauthenticated) {
				code = http.StatusUnauthorized
			}
			if guessed(err) {
				d.noteFailure(r)
			}
			httpError(w, code, "from outside the site LAN the status needs a viewer token with the admin action: %v", err)
			return
		}
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
