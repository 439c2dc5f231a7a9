package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/intercept"
	"github.com/meshproj/mesh/wellknown"
)

func newInitCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Route the pod's TCP traffic through the proxy (the pod's init step)",
		Long: `Program the current network namespace with nftables (through netlink) so that
inbound TCP goes to the proxy's inbound port and outbound TCP to its outbound
port, except the proxy's own traffic (by UID), loopback, and the ports and
networks skipped. It owns one table (inet mesh) and replaces it whole, so
running it again is harmless. Needs NET_ADMIN in the namespace.`,
		Example: `  mesh init --skip-inbound-ports 4191 --dry-run
  mesh init --cleanup`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			if v.GetBool("cleanup") {
				if err := intercept.Cleanup(); err != nil {
					return err
				}
				fmt.Fprintf(s.Out, "removed nftables table inet %s\n", intercept.Table)
				return nil
			}
			c := intercept.Config{
				InboundPort: uint16(v.GetUint("inbound-port")), OutboundPort: uint16(v.GetUint("outbound-port")),
				ProxyUID: uint32(v.GetUint("proxy-uid")),
			}
			if c.SkipInboundPorts, err = intercept.ParsePorts(v.GetString("skip-inbound-ports")); err != nil {
				return usagef("--skip-inbound-ports: %v", err)
			}
			if c.SkipOutboundPorts, err = intercept.ParsePorts(v.GetString("skip-outbound-ports")); err != nil {
				return usagef("--skip-outbound-ports: %v", err)
			}
			if c.SkipOutboundCIDRs, err = intercept.ParseCIDRs(v.GetString("skip-outbound-cidrs")); err != nil {
				return usagef("--skip-outbound-cidrs: %v", err)
			}
			if err := c.Validate(); err != nil {
				return usageError{err}
			}
			if v.GetBool("dry-run") {
				fmt.Fprint(s.Out, intercept.Render(c))
				return nil
			}
			if err := intercept.Apply(c); err != nil {
				return err
			}
			fmt.Fprintf(s.Out, "traffic now goes through the proxy (nftables table inet %s)\n", intercept.Table)
			return nil
		},
	}
	f := cmd.Flags()
	f.Uint("inbound-port", wellknown.InboundPort, "the proxy's inbound port")
	f.Uint("outbound-port", wellknown.OutboundPort, "the proxy's outbound port")
	f.Uint("proxy-uid", wellknown.ProxyUID, "UID the proxy runs as; its own connections are not redirected")
	f.String("skip-inbound-ports", "", "inbound ports that bypass the proxy (include the admin port), such as 4191,9090")
	f.String("skip-outbound-ports", "", "outbound ports that bypass the proxy, such as 25")
	f.String("skip-outbound-cidrs", "", "destinations that bypass the proxy, such as 169.254.169.254/32")
	f.Bool("dry-run", false, "print the rules instead of writing them")
	f.Bool("cleanup", false, "remove the rules")
	return cmd
}
