// Package webui is the LAN page: the installer's view of the box and the
// viewer (live video, a timeline of recordings, clips), as static assets
// embedded in the binary (no CDN, nothing fetched from outside the box).
// It talks only to the box's own JSON APIs; every bit of video it shows
// goes through the same token and on-premise checks as any other client.
package webui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed assets
var assets embed.FS

// Handler serves "/" (the page) and "/assets/…". Assets are revalidated on
// every load (Cache-Control: no-cache) so a firmware update shows at once.
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		switch {
		case r.URL.Path == "/":
			http.ServeFileFS(w, r, sub, "index.html")
		case len(r.URL.Path) > len("/assets/") && r.URL.Path[:len("/assets/")] == "/assets/":
			r2 := r.Clone(r.Context())
			r2.URL.Path = r.URL.Path[len("/assets"):]
			files.ServeHTTP(w, r2)
		default:
			http.NotFound(w, r)
		}
	})
}
