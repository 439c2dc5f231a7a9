// Package intercept programs a pod's network namespace so that its TCP
// traffic goes through the proxy: inbound connections are redirected to the
// proxy's inbound port, outbound ones to its outbound port, except the
// proxy's own traffic (by UID), loopback, and ports and networks the user
// skips. It writes nftables rules through netlink (no iptables binary) into
// one table it owns, which it replaces whole, so running it twice is the
// same as running it once.
//
// The proxy recovers where a redirected connection was going with
// SO_ORIGINAL_DST (package proxy/origdst).
package intercept

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Table is the nftables table intercept owns (family inet: IPv4 and IPv6).
const Table = "mesh"

// Config says what to redirect where.
type Config struct {
	InboundPort       uint16
	OutboundPort      uint16
	ProxyUID          uint32
	SkipInboundPorts  []uint16
	SkipOutboundPorts []uint16
	SkipOutboundCIDRs []netip.Prefix
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.InboundPort == 0 || c.OutboundPort == 0 {
		return fmt.Errorf("inbound and outbound ports are required")
	}
	if c.InboundPort == c.OutboundPort {
		return fmt.Errorf("inbound and outbound ports must differ (both %d)", c.InboundPort)
	}
	for _, p := range c.SkipInboundPorts {
		if p == c.InboundPort {
			return fmt.Errorf("skipping inbound port %d would bypass the proxy's own inbound port", p)
		}
	}
	return nil
}

// match is one condition of a rule.
type match struct {
	kind   string // iifname, oifname, skuid, dport, daddr
	name   string
	uid    uint32
	port   uint16
	prefix netip.Prefix
}

// rule is a list of conditions and what to do when they all hold: return
// (leave the packet alone) or redirect to a port.
type rule struct {
	match    []match
	redirect uint16 // 0: return
}

// chain is a NAT base chain.
type chain struct {
	name, hook string
	priority   int
	rules      []rule
}

// Priorities of the NAT hooks (dstnat is -100).
const natPriority = -100

func (c Config) chains() []chain {
	pre := chain{name: "prerouting", hook: "prerouting", priority: natPriority}
	// Traffic that loops back inside the pod is the proxy talking to the
	// app, or the app to itself.
	pre.rules = append(pre.rules, rule{match: []match{{kind: "iifname", name: "lo"}}})
	for _, p := range c.SkipInboundPorts {
		pre.rules = append(pre.rules, rule{match: []match{{kind: "dport", port: p}}})
	}
	pre.rules = append(pre.rules, rule{redirect: c.InboundPort})

	out := chain{name: "output", hook: "output", priority: natPriority}
	out.rules = append(out.rules,
		rule{match: []match{{kind: "skuid", uid: c.ProxyUID}}}, // the proxy's own connections
		rule{match: []match{{kind: "oifname", name: "lo"}}},
		rule{match: []match{{kind: "daddr", prefix: netip.MustParsePrefix("127.0.0.0/8")}}},
		rule{match: []match{{kind: "daddr", prefix: netip.MustParsePrefix("::1/128")}}},
	)
	for _, p := range c.SkipOutboundPorts {
		out.rules = append(out.rules, rule{match: []match{{kind: "dport", port: p}}})
	}
	for _, p := range c.SkipOutboundCIDRs {
		out.rules = append(out.rules, rule{match: []match{{kind: "daddr", prefix: p.Masked()}}})
	}
	out.rules = append(out.rules, rule{redirect: c.OutboundPort})
	return []chain{pre, out}
}

// Render prints the rules in nft syntax, as `nft list table inet mesh`
// would show them.
func Render(c Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", Table)
	for i, ch := range c.chains() {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype nat hook %s priority %d; policy accept;\n", ch.name, ch.hook, ch.priority)
		for _, r := range ch.rules {
			b.WriteString("\t\t")
			for _, m := range r.match {
				b.WriteString(m.String() + " ")
			}
			if r.redirect != 0 {
				fmt.Fprintf(&b, "meta l4proto tcp redirect to :%d\n", r.redirect)
			} else {
				b.WriteString("return\n")
			}
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func (m match) String() string {
	switch m.kind {
	case "iifname", "oifname":
		return m.kind + ` "` + m.name + `"`
	case "skuid":
		return "meta skuid " + strconv.FormatUint(uint64(m.uid), 10)
	case "dport":
		return "tcp dport " + strconv.Itoa(int(m.port))
	case "daddr":
		if m.prefix.Addr().Is4() {
			return "ip daddr " + m.prefix.String()
		}
		return "ip6 daddr " + m.prefix.String()
	}
	return "?"
}

// ParsePorts reads "25,3306".
func ParsePorts(s string) ([]uint16, error) {
	var out []uint16
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a port", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

// ParseCIDRs reads "10.0.0.0/8,169.254.169.254/32".
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not a CIDR or an address", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	return out, nil
}
