// Package recorder records the site's RTSP cameras to crash-safe fMP4
// segments on local storage, indexes them, and serves playback and live
// restreams. Built by the recorder issue.
package recorder
