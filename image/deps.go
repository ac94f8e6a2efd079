//go:build for_go_mod_tidy_only

// Package image pins, in the one go.mod of this repository, every package
// that goes into an Outpost disk image: gokrazy's init and system programs,
// the kernels, the Raspberry Pi firmware and EEPROM, and the image build
// tooling. Nothing imports it; it exists so that `go mod tidy` keeps them.
package image

import (
	_ "github.com/gokrazy/firmware"
	_ "github.com/gokrazy/gokrazy"
	_ "github.com/gokrazy/gokrazy/cmd/dhcp"
	_ "github.com/gokrazy/gokrazy/cmd/ntp"
	_ "github.com/gokrazy/gokrazy/cmd/randomd"
	_ "github.com/gokrazy/kernel.amd64"
	_ "github.com/gokrazy/kernel.rpi"
	_ "github.com/gokrazy/rpi-eeprom"
)
