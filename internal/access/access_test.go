package access

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

var site = Site{Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("fd00:1::/64")}}

var (
	lanAddr  = netip.MustParseAddr("192.168.1.23")
	farAddr  = netip.MustParseAddr("10.8.0.5") // e.g. a VPN client routed in
	lanAddr6 = netip.MustParseAddr("fd00:1::42")
)

// TestDecideEveryModeAndPath walks every live mode and every recorded mode
// over every path, from the site LAN and from elsewhere.
func TestDecideEveryModeAndPath(t *testing.T) {
	type want struct {
		onSite, offSite error // nil: allowed
	}
	// Expected outcome per mode for LAN paths (lan, rtsp, hls); cloud paths
	// have no source address and are never on-site.
	live := []struct {
		p            Policy
		user         string
		lan, farAway error
		cloud        error
	}{
		{Policy{Live: ""}, "alice", nil, nil, nil},
		{Policy{Live: LiveGlobal}, "alice", nil, nil, nil},
		{Policy{Live: LiveOnPrem}, "alice", nil, ErrOnPrem, ErrOnPrem},
		{Policy{Live: LiveUsers, LiveUsers: []string{"alice"}}, "alice", nil, nil, nil},
		{Policy{Live: LiveUsers, LiveUsers: []string{"alice"}}, "bob", ErrUser, ErrUser, ErrUser},
		{Policy{Live: LiveUsers, LiveUsers: []string{"alice"}}, "", ErrUser, ErrUser, ErrUser},
	}
	recorded := []struct {
		p            Policy
		lan, farAway error
		cloud        error
	}{
		{Policy{Recorded: ""}, nil, nil, nil},
		{Policy{Recorded: RecordedGlobal}, nil, nil, nil},
		{Policy{Recorded: RecordedOnPrem}, nil, ErrOnPrem, ErrOnPrem},
		{Policy{Recorded: RecordedRecordingOnly}, ErrRecordingOnly, ErrRecordingOnly, ErrRecordingOnly},
	}
	check := func(t *testing.T, got, want error) {
		t.Helper()
		if want == nil && got != nil {
			t.Errorf("refused: %v", got)
		}
		if want != nil && !errors.Is(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	}
	for _, path := range Paths {
		for _, c := range live {
			for _, from := range []struct {
				name string
				a    netip.Addr
			}{{"lan", lanAddr}, {"lan6", lanAddr6}, {"far", farAddr}, {"none", netip.Addr{}}} {
				t.Run(string(path)+"/live="+c.p.Live+"/"+c.user+"/"+from.name, func(t *testing.T) {
					want := c.lan
					switch {
					case path.OffSite():
						want = c.cloud
					case from.name == "far" || from.name == "none":
						want = c.farAway
					}
					check(t, Decide(c.p, site, Request{Path: path, Kind: KindLive, User: c.user, Remote: from.a}), want)
				})
			}
		}
		for _, c := range recorded {
			for _, from := range []struct {
				name string
				a    netip.Addr
			}{{"lan", lanAddr}, {"far", farAddr}} {
				t.Run(string(path)+"/recorded="+c.p.Recorded+"/"+from.name, func(t *testing.T) {
					want := c.lan
					switch {
					case path.OffSite():
						want = c.cloud
					case from.name == "far":
						want = c.farAway
					}
					check(t, Decide(c.p, site, Request{Path: path, Kind: KindRecorded, User: "alice", Remote: from.a}), want)
				})
			}
		}
	}
	// A cloud path is off-site even if the command somehow carries a LAN
	// address.
	if err := Decide(Policy{Live: LiveOnPrem}, site, Request{Path: PathCloudSnapshot, Kind: KindLive, Remote: lanAddr}); !errors.Is(err, ErrOnPrem) {
		t.Errorf("cloud snapshot of on-prem camera: %v", err)
	}
	// Modes are independent: recording-only leaves live alone.
	if err := Decide(Policy{Recorded: RecordedRecordingOnly}, site, Request{Path: PathHLS, Kind: KindLive, Remote: farAddr}); err != nil {
		t.Errorf("recording-only camera's live refused: %v", err)
	}
	if err := Decide(Policy{}, site, Request{Path: PathLAN, Kind: "snapshot"}); err == nil {
		t.Error("unknown kind allowed")
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		p  Policy
		ok bool
	}{
		{Policy{}, true},
		{Policy{Live: LiveOnPrem, Recorded: RecordedRecordingOnly}, true},
		{Policy{Live: LiveUsers, LiveUsers: []string{"a"}}, true},
		{Policy{Live: LiveUsers}, false},
		{Policy{Live: LiveGlobal, LiveUsers: []string{"a"}}, false},
		{Policy{Live: "public"}, false},
		{Policy{Recorded: "cloud"}, false},
		{Policy{Live: LiveUsers, LiveUsers: []string{""}}, false},
	} {
		if err := c.p.Validate(); (err == nil) != c.ok {
			t.Errorf("%+v: %v", c.p, err)
		}
	}
}

func TestDetectSite(t *testing.T) {
	up := net.FlagUp | net.FlagBroadcast | net.FlagMulticast
	s := DetectSite([]Interface{
		{Name: "lo", Flags: net.FlagUp | net.FlagLoopback, Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
		{Name: "eth0", Flags: up, Addrs: []netip.Prefix{netip.MustParsePrefix("192.168.1.10/24"), netip.MustParsePrefix("fe80::1/64")}},
		{Name: "eth1", Flags: net.FlagBroadcast, Addrs: []netip.Prefix{netip.MustParsePrefix("172.16.0.1/16")}}, // down
		{Name: "tailscale0", Flags: up, Addrs: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/10")}},
		{Name: "wg0", Flags: up, Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}},
		{Name: "ppp0", Flags: net.FlagUp | net.FlagPointToPoint, Addrs: []netip.Prefix{netip.MustParsePrefix("10.64.0.2/32")}},
	})
	for a, want := range map[string]bool{
		"192.168.1.99": true, "fe80::abcd": true, "127.0.0.1": false, "172.16.3.4": false,
		"100.64.0.9": false, "10.9.0.7": false, "10.64.0.2": false, "8.8.8.8": false,
		"::ffff:192.168.1.5": true,
	} {
		if got := s.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("%s on site: %v, want %v", a, got, want)
		}
	}
}

func TestRemoteAddrAndPrefixes(t *testing.T) {
	for in, want := range map[string]string{"192.168.1.2:443": "192.168.1.2", "[::1]:80": "::1", "[::ffff:10.0.0.1]:1": "10.0.0.1", "garbage": "invalid IP", "10.0.0.3": "10.0.0.3"} {
		if got := RemoteAddr(in).String(); got != want {
			t.Errorf("RemoteAddr(%q) = %s, want %s", in, got, want)
		}
	}
	ps, err := ParsePrefixes([]string{"192.168.1.7/24", "10.0.0.1"})
	if err != nil || ps[0].String() != "192.168.1.0/24" || ps[1].String() != "10.0.0.1/32" {
		t.Errorf("ParsePrefixes: %v %v", ps, err)
	}
	if _, err := ParsePrefixes([]string{"lan"}); err == nil {
		t.Error("bad prefix accepted")
	}
}
