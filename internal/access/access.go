// Package access decides whether a viewer may see a camera's video on a
// given path, from the camera's on-premise modes. It is the one place the
// modes are interpreted: the LAN API, the RTSP restream, HLS, clip export
// and the cloud's snapshot and clip commands all ask Decide.
//
// Live video has three modes: on-prem (only from the site LAN), global
// (anywhere the viewer's token reaches), users (only the listed users, from
// anywhere). Recorded video has three: on-prem, recording-only (kept, never
// viewed or exported by anyone), global. "From the site LAN" means the
// request's source address is inside the box's own LAN subnets; a request
// relayed by the cloud, or arriving through a tunnel or a router from
// another network, is not on-prem. Forwarding headers are never trusted.
package access

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Live modes.
const (
	LiveOnPrem = "on-prem"
	LiveGlobal = "global"
	LiveUsers  = "users"
)

// Recorded modes.
const (
	RecordedOnPrem        = "on-prem"
	RecordedRecordingOnly = "recording-only"
	RecordedGlobal        = "global"
)

// Policy is one camera's modes. The zero Policy is global for both.
type Policy struct {
	Live      string   // "" means global
	LiveUsers []string // for Live == "users"
	Recorded  string   // "" means global
}

// Validate checks the modes' spelling.
func (p Policy) Validate() error {
	switch p.Live {
	case "", LiveOnPrem, LiveGlobal:
		if len(p.LiveUsers) > 0 {
			return fmt.Errorf("live_users is only for live mode %q", LiveUsers)
		}
	case LiveUsers:
		if len(p.LiveUsers) == 0 {
			return fmt.Errorf("live mode %q needs live_users", LiveUsers)
		}
		for _, u := range p.LiveUsers {
			if u == "" || len(u) > 128 {
				return fmt.Errorf("live_users: bad user %q", u)
			}
		}
	default:
		return fmt.Errorf("live mode %q: want %s, %s or %s", p.Live, LiveOnPrem, LiveGlobal, LiveUsers)
	}
	switch p.Recorded {
	case "", RecordedOnPrem, RecordedRecordingOnly, RecordedGlobal:
	default:
		return fmt.Errorf("recorded mode %q: want %s, %s or %s", p.Recorded, RecordedOnPrem, RecordedRecordingOnly, RecordedGlobal)
	}
	return nil
}

// Path is how a request reaches the video.
type Path string

// The paths. LAN paths carry the viewer's source address; cloud paths send
// video off the site by definition.
const (
	PathLAN           Path = "lan"            // the LAN HTTPS API and page
	PathRTSP          Path = "rtsp"           // the RTSP restream
	PathHLS           Path = "hls"            // HLS for browsers
	PathCloudExport   Path = "cloud-export"   // clip export to an upload URL
	PathCloudSnapshot Path = "cloud-snapshot" // a still image for the cloud
	PathCloudClip     Path = "cloud-clip"     // a clip for the cloud
)

// Paths lists every path (for tests and docs).
var Paths = []Path{PathLAN, PathRTSP, PathHLS, PathCloudExport, PathCloudSnapshot, PathCloudClip}

// OffSite reports whether p sends video through the cloud.
func (p Path) OffSite() bool { return strings.HasPrefix(string(p), "cloud-") }

// What a request wants to see.
const (
	KindLive     = "live"     // live video or a current still
	KindRecorded = "recorded" // playback, clip download or export
)

// Request is one access.
type Request struct {
	Path Path
	Kind string // KindLive or KindRecorded
	// User is the token's user (for live mode users); empty for a cloud
	// command that names nobody.
	User string
	// Remote is the viewer's address on LAN paths.
	Remote netip.Addr
}

// Errors Decide returns, each wrapped with the reason.
var (
	ErrOnPrem        = errors.New("this camera's video stays on the site LAN")
	ErrRecordingOnly = errors.New("this camera's recordings are kept but may not be viewed or exported")
	ErrUser          = errors.New("live video of this camera is limited to named users")
)

// Site is the set of networks that count as the site LAN.
type Site struct {
	Prefixes []netip.Prefix
}

// Contains reports whether a is on the site LAN.
func (s Site) Contains(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	u := a.Unmap()
	for _, p := range s.Prefixes {
		if p.Contains(u) || p.Contains(a) {
			return true
		}
	}
	return false
}

// Decide returns nil if r may see the camera with policy p, or an error
// saying why not. It assumes the viewer's token was already verified and
// grants the camera and action.
func Decide(p Policy, site Site, r Request) error {
	onSite := !r.Path.OffSite() && site.Contains(r.Remote)
	switch r.Kind {
	case KindLive:
		switch p.Live {
		case "", LiveGlobal:
			return nil
		case LiveUsers:
			if r.User != "" && slices.Contains(p.LiveUsers, r.User) {
				return nil
			}
			return fmt.Errorf("%w (%s is not one of them)", ErrUser, orNobody(r.User))
		default: // on-prem, and anything unknown
			if onSite {
				return nil
			}
			return fmt.Errorf("%w: live on %s from %s", ErrOnPrem, r.Path, where(r))
		}
	case KindRecorded:
		switch p.Recorded {
		case "", RecordedGlobal:
			return nil
		case RecordedRecordingOnly:
			return ErrRecordingOnly
		default:
			if onSite {
				return nil
			}
			return fmt.Errorf("%w: recordings on %s from %s", ErrOnPrem, r.Path, where(r))
		}
	}
	return fmt.Errorf("access: unknown kind %q", r.Kind)
}

func orNobody(u string) string {
	if u == "" {
		return "an unnamed requester"
	}
	return u
}

func where(r Request) string {
	if r.Path.OffSite() {
		return "the cloud"
	}
	if !r.Remote.IsValid() {
		return "an unknown address"
	}
	return r.Remote.String() + ", outside the site LAN"
}

// ParsePrefixes parses CIDR prefixes ("192.168.1.0/24"); a bare address
// is a single-host prefix.
func ParsePrefixes(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			if p.Addr().Is4In6() && p.Bits() >= 96 { // ::ffff:10.0.0.0/104 is 10.0.0.0/8
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("site subnet %q: want a CIDR prefix like 192.168.1.0/24", s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// Interface is what DetectSite needs of a network interface.
type Interface struct {
	Name  string
	Flags net.Flags
	Addrs []netip.Prefix
}

// tunnelPrefixes name interfaces that lead off the site: VPNs and tunnels
// terminate there, so their subnets are not the site LAN.
var tunnelPrefixes = []string{"tun", "tap", "wg", "tailscale", "zt", "ppp", "ipsec", "gre", "sit", "ip6tnl", "vti", "docker", "veth", "br-"}

// DetectSite returns the site LAN: the subnets of the box's up, broadcast-
// capable interfaces, leaving out loopback and tunnels.
func DetectSite(ifs []Interface) Site {
	var s Site
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagPointToPoint != 0 {
			continue
		}
		if ifc.Flags&net.FlagBroadcast == 0 {
			continue
		}
		if slices.ContainsFunc(tunnelPrefixes, func(p string) bool { return strings.HasPrefix(ifc.Name, p) }) {
			continue
		}
		for _, p := range ifc.Addrs {
			s.Prefixes = append(s.Prefixes, p.Masked())
		}
	}
	return s
}

// SystemInterfaces reads the box's interfaces.
func SystemInterfaces() ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []Interface
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		x := Interface{Name: ifc.Name, Flags: ifc.Flags}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				ip, ok := netip.AddrFromSlice(ipn.IP)
				if !ok {
					continue
				}
				ones, _ := ipn.Mask.Size()
				x.Addrs = append(x.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
			}
		}
		out = append(out, x)
	}
	return out, nil
}

// RemoteAddr parses an http.Request.RemoteAddr or net.Addr string
// ("1.2.3.4:5678", "[::1]:80"); invalid gives the zero Addr.
func RemoteAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}
