// Package ota verifies signed update manifests, streams a new root into the
// inactive slot, trial-boots it and commits or falls back. Built by the OTA
// issue; see docs/ota.md once it lands.
package ota
