//go:build for_go_mod_tidy_only

// Package pins keeps the project's chosen libraries in go.mod at the versions
// that resolve here (see DEVELOPERS.md and the field notes) until the code
// that uses them lands: gortsplib v4.16.2 (v4.16.3 is an empty stub), its
// mediacommon, paho's autopaho, msgpack, gokrazy's updater and the embedded
// MQTT broker for tests and the demo. Nothing imports this package.
package pins

import (
	_ "github.com/bluenviron/gortsplib/v4"
	_ "github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	_ "github.com/eclipse/paho.golang/autopaho"
	_ "github.com/gokrazy/updater"
	_ "github.com/mochi-mqtt/server/v2"
	_ "github.com/vmihailenco/msgpack/v5"
)
