package daemon

import (
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/outpost-gw/outpost/internal/access"
	"github.com/outpost-gw/outpost/internal/tokens"
)

// The LAN page signs in by posting a viewer token once; the box keeps it in
// an HttpOnly, Secure, SameSite=Strict cookie, so that the token is not in
// URLs, not readable by scripts, and not sent by other sites' requests.
const sessionCookie = "outpost_token"

// sessionToken is the token in the session cookie, if any.
func (d *daemon) sessionToken(r *http.Request) string {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return ""
	}
	return c.Value
}

// handleSignIn: POST /api/v1/session with form field token. The token is
// verified (for this box, any action) before the cookie is set; failures
// count towards the source's lockout.
func (d *daemon) handleSignIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	tok := r.PostFormValue("token")
	v := d.verifier()
	if v == nil {
		httpError(w, http.StatusForbidden, "viewer access needs a fleet key (this box has no fleet file)")
		return
	}
	claims, err := tokens.Parse(tok, v.Key)
	if err == nil && claims.SingleUse {
		err = errors.New("a single-use token opens one URL; sign in with a viewer token that is not single-use")
	}
	if err == nil {
		claims, err = v.Verify(tok)
	}
	if err != nil {
		d.audit(r.Context(), "token:", "sign in", "", r.RemoteAddr+" "+r.UserAgent(), "denied: "+err.Error())
		if guessed(err) {
			d.noteFailure(r)
		}
		httpError(w, http.StatusUnauthorized, "%v", err)
		return
	}
	d.audit(r.Context(), claims.User, "sign in", "", r.RemoteAddr+" "+r.UserAgent(), "ok")
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: tok, Path: "/", HttpOnly: true, Secure: true,
		SameSite: http.SameSiteStrictMode, Expires: time.Unix(claims.Expires, 0),
	})
	writeJSON(w, map[string]any{"user": claims.User, "cameras": claims.Cameras, "actions": claims.Actions, "expires": time.Unix(claims.Expires, 0).UTC()})
}

// handleSession: GET /api/v1/session tells the LAN page who is signed in
// (the cookie is HttpOnly, so the page cannot read it): 401 without a
// valid session.
func (d *daemon) handleSession(w http.ResponseWriter, r *http.Request) {
	v := d.verifier()
	tok := d.sessionToken(r)
	if v == nil || tok == "" {
		httpError(w, http.StatusUnauthorized, "not signed in")
		return
	}
	claims, err := v.Verify(tok) // a session token is never single-use: nothing is spent
	if err != nil {
		httpError(w, http.StatusUnauthorized, "not signed in: %v", err)
		return
	}
	writeJSON(w, map[string]any{"user": claims.User, "cameras": claims.Cameras, "actions": claims.Actions, "expires": time.Unix(claims.Expires, 0).UTC()})
}

// handleSignOut: DELETE /api/v1/session.
func (d *daemon) handleSignOut(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	w.WriteHeader(http.StatusNoContent)
}

// csrf refuses a state-changing request (anything but GET, HEAD, OPTIONS)
// whose Origin (or, lacking it, Referer) is not this box's own origin; the
// SameSite=Strict cookie is the second line. Requests with neither header
// come from non-browser clients, which carry no ambient cookie to abuse,
// and pass.
func (d *daemon) csrf(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		origin := r.Header.Get("Origin")
		if origin == "" {
			if ref := r.Header.Get("Referer"); ref != "" {
				if u, err := url.Parse(ref); err == nil {
					origin = u.Scheme + "://" + u.Host
				}
			}
		}
		if origin == "" && r.Header.Get("Sec-Fetch-Site") == "" {
			next.ServeHTTP(w, r)
			return
		}
		u, err := url.Parse(origin)
		if err != nil || u.Scheme != "https" || u.Host != r.Host || r.Header.Get("Sec-Fetch-Site") == "cross-site" {
			d.audit(r.Context(), "csrf:", r.Method+" "+r.URL.Path, "", r.RemoteAddr+" "+r.UserAgent(), "denied: origin "+origin)
			httpError(w, http.StatusForbidden, "cross-site request refused")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Lockout: a source that fails authentication maxFailures times within
// failureWindow is refused for lockoutFor, whatever it sends. The limit is
// per address, so one guesser cannot lock out the whole LAN.
const (
	maxFailures   = 10
	failureWindow = 10 * time.Minute
	lockoutFor    = 15 * time.Minute
)

type lockout struct {
	mu   sync.Mutex
	now  func() time.Time
	srcs map[netip.Addr]*failures
}

type failures struct {
	n           int
	first, till time.Time
}

func (l *lockout) clock() time.Time {
	if l.now == nil {
		return time.Now()
	}
	return l.now()
}

func (l *lockout) locked(a netip.Addr) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock()
	f := l.srcs[a]
	if f == nil || !now.Before(f.till) {
		return false, 0
	}
	return true, f.till.Sub(now)
}

// fail counts a failure and reports whether a lockout started.
func (l *lockout) fail(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock()
	if l.srcs == nil {
		l.srcs = map[netip.Addr]*failures{}
	}
	if len(l.srcs) > 10000 { // bound memory under a spray of sources
		for k, f := range l.srcs {
			if now.Sub(f.first) > failureWindow && !now.Before(f.till) {
				delete(l.srcs, k)
			}
		}
	}
	f := l.srcs[a]
	if f == nil || now.Sub(f.first) > failureWindow {
		f = &failures{first: now}
		l.srcs[a] = f
	}
	f.n++
	if f.n >= maxFailures && !now.Before(f.till) {
		f.till, f.n, f.first = now.Add(lockoutFor), 0, now
		return true
	}
	return false
}

// guessed reports whether a refused token looks like a guess: one that
// does not parse or whose signature is not the fleet's. A genuine token
// that expired, was already spent or names another box is a viewer's
// mishap (an expired session still polling), not an attack, and does not
// count towards the lockout.
func guessed(err error) bool {
	return errors.Is(err, tokens.ErrMalformed) || errors.Is(err, tokens.ErrSignature)
}

// noteFailure counts a failed authentication of r's source.
func (d *daemon) noteFailure(r *http.Request) {
	a := access.RemoteAddr(r.RemoteAddr)
	if d.locks.fail(a) {
		d.audit(r.Context(), "lockout:", "authentication", "", r.RemoteAddr+" "+r.UserAgent(), "locked out for "+lockoutFor.String()+" after repeated failures")
	}
}

// lockoutGate refuses requests from a locked-out source, and from a source
// over its request rate (429 both).
func (d *daemon) lockoutGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := access.RemoteAddr(r.RemoteAddr)
		if ok, left := d.locks.locked(a); ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(left.Seconds())+1))
			httpError(w, http.StatusTooManyRequests, "too many failed attempts from this address; try again in %v", left.Round(time.Second))
			return
		}
		if !a.IsLoopback() && !d.rates.allow(a) { // the box's own processes are not limited
			if d.rates.firstRefusal(a) {
				d.audit(r.Context(), "ratelimit:", r.Method+" "+r.URL.Path, "", r.RemoteAddr+" "+r.UserAgent(), "denied: over the request rate")
			}
			w.Header().Set("Retry-After", "1")
			httpError(w, http.StatusTooManyRequests, "too many requests from this address; slow down")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Rate limit: each source address gets a bucket of rateBurst requests,
// refilled at ratePerSecond: far above what the LAN page and a few video
// players need (a playlist and a segment a second each), far below a
// flood that would fill the audit log or starve the recorder of CPU.
const (
	ratePerSecond = 50
	rateBurst     = 200
)

type rateLimits struct {
	mu      sync.Mutex
	now     func() time.Time
	srcs    map[netip.Addr]*bucket
	audited minutely // refusals audited
}

type bucket struct {
	tokens float64
	last   time.Time
}

func (l *rateLimits) clock() time.Time {
	if l.now == nil {
		return time.Now()
	}
	return l.now()
}

func (l *rateLimits) allow(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock()
	if l.srcs == nil {
		l.srcs = map[netip.Addr]*bucket{}
	}
	if len(l.srcs) > 10000 { // bound memory under a spray of sources
		for k, b := range l.srcs {
			if now.Sub(b.last) > time.Minute {
				delete(l.srcs, k)
			}
		}
	}
	b := l.srcs[a]
	if b == nil {
		b = &bucket{tokens: rateBurst, last: now}
		l.srcs[a] = b
	}
	b.tokens = min(rateBurst, b.tokens+now.Sub(b.last).Seconds()*ratePerSecond)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// firstRefusal reports whether a refusal of a should be audited: once a
// minute per source, so a flood cannot fill the audit log either.
func (l *rateLimits) firstRefusal(a netip.Addr) bool { return l.audited.first(a, l.clock()) }

// minutely lets one event per source address through each minute.
type minutely struct {
	mu   sync.Mutex
	seen map[netip.Addr]time.Time
}

func (m *minutely) first(a netip.Addr, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen == nil || len(m.seen) > 10000 {
		m.seen = map[netip.Addr]time.Time{}
	}
	if t, ok := m.seen[a]; ok && now.Sub(t) < time.Minute {
		return false
	}
	m.seen[a] = now
	return true
}
