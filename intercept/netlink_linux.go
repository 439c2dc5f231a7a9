package intercept

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Apply replaces the mesh table with the configuration's rules, in one
// netlink transaction: the namespace never sees half the rules.
func Apply(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: Table}
	conn.AddTable(t) // so that the delete below succeeds when there was none
	conn.DelTable(t)
	conn.AddTable(t)
	for _, ch := range c.chains() {
		hook := nftables.ChainHookPrerouting
		if ch.hook == "output" {
			hook = nftables.ChainHookOutput
		}
		prio := nftables.ChainPriority(ch.priority)
		policy := nftables.ChainPolicyAccept
		nc := conn.AddChain(&nftables.Chain{Name: ch.name, Table: t, Type: nftables.ChainTypeNAT, Hooknum: hook, Priority: &prio, Policy: &policy})
		for _, r := range ch.rules {
			conn.AddRule(&nftables.Rule{Table: t, Chain: nc, Exprs: exprs(r)})
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("writing nftables rules (is nf_tables with NAT available, and do we have NET_ADMIN?): %w", err)
	}
	return nil
}

// Cleanup removes the mesh table, if there is one.
func Cleanup() error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: Table}
	conn.AddTable(t)
	conn.DelTable(t)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("removing nftables table %s: %w", Table, err)
	}
	return nil
}

func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

func tcp() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

func exprs(r rule) []expr.Any {
	var out []expr.Any
	for _, m := range r.match {
		switch m.kind {
		case "iifname", "oifname":
			key := expr.MetaKeyIIFNAME
			if m.kind == "oifname" {
				key = expr.MetaKeyOIFNAME
			}
			out = append(out, &expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(m.name)})
		case "skuid":
			out = append(out, &expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(m.uid)})
		case "dport":
			out = append(out, tcp()...)
			out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(m.port)})
		case "daddr":
			proto, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
			if !m.prefix.Addr().Is4() {
				proto, off, n = unix.NFPROTO_IPV6, 24, 16
			}
			mask := make([]byte, n)
			for i := 0; i < m.prefix.Bits(); i++ {
				mask[i/8] |= 0x80 >> (i % 8)
			}
			out = append(out,
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: m.prefix.Addr().AsSlice()},
			)
		}
	}
	if r.redirect == 0 {
		return append(out, &expr.Verdict{Kind: expr.VerdictReturn})
	}
	out = append(out, tcp()...)
	return append(out,
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(r.redirect)},
		&expr.Redir{RegisterProtoMin: 1},
	)
}
