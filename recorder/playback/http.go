package playback

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-gw/outpost/recorder/index"
	"github.com/outpost-gw/outpost/recorder/segment"
)

// MaxDuration bounds the range of one playback request.
const MaxDuration = 24 * time.Hour

// errParams reports a query the handler refuses with 400.
var errParams = errors.New("bad parameters")

// Lister finds a camera's recordings overlapping [from, to), in order;
// *index.Index is one.
type Lister interface {
	List(camera string, from, to time.Time) ([]index.Recording, error)
}

// Handler serves GET /api/v1/recordings/video?camera=ID&start=RFC3339&
// duration=SECONDS (fractional seconds allowed, at most MaxDuration): the
// range as one fragmented MP4 (see Write), streamed with chunked encoding
// as video/mp4, inline, named <camera>-<start>.mp4. X-Playback-Start gives
// the wall clock of the stream's time 0 (RFC 3339), at or before start.
// There is no Range support: a browser plays it from the beginning.
//
// Bad parameters give 400, a camera known (nil: any) does not accept or an
// empty range 404, errors before the first byte 500 (JSON {"error": …}). A
// failure in mid-stream is logged and the response aborted, so the client
// sees a broken transfer rather than a short file.
func Handler(ix Lister, root string, known func(camera string) bool, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			httpError(w, http.StatusMethodNotAllowed, "method %s", r.Method)
			return
		}
		p, err := parseParams(r.URL.Query())
		if err != nil {
			httpError(w, http.StatusBadRequest, "%v", err)
			return
		}
		if known != nil && !known(p.camera) {
			httpError(w, http.StatusNotFound, "unknown camera %q", p.camera)
			return
		}
		recs, err := ix.List(p.camera, p.start, p.start.Add(p.dur))
		if err != nil {
			log.Error("playback: index", "camera", p.camera, "err", err)
			httpError(w, http.StatusInternalServerError, "index: %v", err)
			return
		}
		started := false
		err = write(r.Context(), w, root, recs, p.start, p.dur, func(origin time.Time) {
			started = true
			h := w.Header()
			h.Set("Content-Type", "video/mp4")
			h.Set("Content-Disposition", fmt.Sprintf("inline; filename=%q", p.camera+"-"+p.start.UTC().Format("20060102T150405Z")+".mp4"))
			h.Set("X-Playback-Start", origin.UTC().Format(time.RFC3339Nano))
			h.Set("Accept-Ranges", "none")
			w.WriteHeader(http.StatusOK)
		})
		switch {
		case err == nil:
		case r.Context().Err() != nil:
			log.Debug("playback: client gone", "camera", p.camera, "err", err)
		case !started && errors.Is(err, ErrNoRecording):
			httpError(w, http.StatusNotFound, "nothing recorded for %s in [%s, +%v)", p.camera, p.start.Format(time.RFC3339), p.dur)
		case !started:
			log.Error("playback", "camera", p.camera, "start", p.start, "err", err)
			httpError(w, http.StatusInternalServerError, "playback: %v", err)
		default:
			log.Error("playback: stream cut short", "camera", p.camera, "start", p.start, "err", err)
			panic(http.ErrAbortHandler) // net/http's way to abort a response; it logs no stack
		}
	})
}

type params struct {
	camera string
	start  time.Time
	dur    time.Duration
}

// parseParams reads camera, start and duration from a query.
func parseParams(q url.Values) (params, error) {
	p := params{camera: q.Get("camera")}
	if !segment.ValidCamera(p.camera) {
		return p, fmt.Errorf("%w: camera %q", errParams, p.camera)
	}
	start, err := time.Parse(time.RFC3339, q.Get("start"))
	if err != nil {
		return p, fmt.Errorf("%w: start must be an RFC 3339 time", errParams)
	}
	secs, err := parseFloat(q.Get("duration"))
	if err != nil || !(secs > 0 && secs <= MaxDuration.Seconds()) {
		return p, fmt.Errorf("%w: duration must be seconds, more than 0 and at most %v", errParams, MaxDuration)
	}
	p.start, p.dur = start, time.Duration(math.Round(secs*float64(time.Second)))
	if p.dur <= 0 {
		return p, fmt.Errorf("%w: duration rounds to 0", errParams)
	}
	return p, nil
}

// parseFloat is strconv.ParseFloat restricted to plain decimals: no sign,
// exponent, hex, underscores, "Inf" or "NaN".
func parseFloat(s string) (float64, error) {
	if len(s) > 32 || strings.Trim(s, "0123456789.") != "" || strings.Count(s, ".") > 1 || strings.Trim(s, ".") == "" {
		return 0, errParams
	}
	return strconv.ParseFloat(s, 64)
}

func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf(format, args...)})
}
