package intercept

import (
	"net/netip"
	"testing"

	"github.com/meshproj/mesh/internal/golden"
)

func TestGoldenRules(t *testing.T) {
	c := Config{InboundPort: 4143, OutboundPort: 4140, ProxyUID: 2102,
		SkipInboundPorts: []uint16{4191, 9090}, SkipOutboundPorts: []uint16{25},
		SkipOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32"), netip.MustParsePrefix("fd00::/8")}}
	golden.Check(t, "testdata/rules.golden", []byte(Render(c)))
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{
		{InboundPort: 4143},
		{InboundPort: 4143, OutboundPort: 4143},
		{InboundPort: 4143, OutboundPort: 4140, SkipInboundPorts: []uint16{4143}},
	} {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestParse(t *testing.T) {
	if p, err := ParsePorts("25, 3306"); err != nil || len(p) != 2 || p[1] != 3306 {
		t.Errorf("%v %v", p, err)
	}
	if _, err := ParsePorts("25,smtp"); err == nil {
		t.Error("accepted smtp")
	}
	c, err := ParseCIDRs("10.0.0.0/8,169.254.169.254,::1")
	if err != nil || len(c) != 3 || c[1].Bits() != 32 || c[2].Bits() != 128 {
		t.Errorf("%v %v", c, err)
	}
}
