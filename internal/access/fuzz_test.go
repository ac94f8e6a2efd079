package access

import (
	"strings"
	"testing"
)

// FuzzSite: site subnets and remote addresses come from config and from
// the network; parsing never panics, and a parsed prefix contains its own
// address.
func FuzzSite(f *testing.F) {
	f.Add("192.168.1.0/24", "192.168.1.9:443")
	f.Add("fd00::/8,10.0.0.1", "[fd00::1]:80")
	f.Fuzz(func(t *testing.T, subnets, remote string) {
		ps, err := ParsePrefixes(strings.Split(subnets, ","))
		if err != nil {
			return
		}
		s := Site{Prefixes: ps}
		for _, p := range ps {
			if !s.Contains(p.Addr()) {
				t.Fatalf("%v does not contain its own address", p)
			}
		}
		a := RemoteAddr(remote)
		_ = s.Contains(a)
		_ = Decide(Policy{Live: LiveOnPrem, Recorded: RecordedOnPrem}, s, Request{Path: PathLAN, Kind: KindLive, Remote: a})
		if a.Is4In6() {
			t.Fatalf("RemoteAddr left %v mapped", a)
		}
	})
}
