package cli

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/identity"
)

func newIdentityCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Run the local identity service (certificates for proxies without Kubernetes)",
		Long: `The identity service signs short-lived certificates for proxies. On Kubernetes
it is part of mesh-controller and checks ServiceAccount tokens; in local mode
it runs on its own with tokens it issues itself.

  mesh identity init --dir ./identity        # trust anchor, issuer, token key
  mesh identity serve --dir ./identity --addr 127.0.0.1:8443 &
  mesh identity token --dir ./identity --namespace default --service-account web > web.token
  mesh proxy ... --identity spiffe://cluster.local/ns/default/sa/web \
    --identity-addr 127.0.0.1:8443 --identity-trust-anchors ./identity/trust-anchors.pem \
    --identity-token-file web.token`,
	}
	cmd.AddCommand(newIdentityInitCommand(s), newIdentityServeCommand(s), newIdentityTokenCommand(s))
	return cmd
}

func newIdentityInitCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a trust anchor, an issuer and a token key",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			dir := v.GetString("dir")
			if err := identity.InitDir(dir); err != nil {
				return err
			}
			fmt.Fprintf(s.Out, "identity material written to %s (%s is what proxies trust)\n", dir, identity.AnchorsFile)
			return nil
		},
	}
	cmd.Flags().String("dir", "identity", "directory for the identity files")
	return cmd
}

func newIdentityServeCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the identity API over HTTPS",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, log, err := settingsAndLogger(cmd, s.ErrOut)
			if err != nil {
				return err
			}
			dir, err := identity.LoadDir(v.GetString("dir"))
			if err != nil {
				return err
			}
			lifetime := v.GetDuration("cert-lifetime")
			if lifetime < time.Second {
				return usagef("--cert-lifetime must be at least 1s, got %s", lifetime)
			}
			srv := &identity.Server{TrustDomain: v.GetString("trust-domain"), Validator: dir.Tokens, Lifetime: lifetime, Log: log}
			srv.SetIssuer(dir.Issuer)
			ln, err := net.Listen("tcp", v.GetString("addr"))
			if err != nil {
				return fmt.Errorf("identity listener: %w", err)
			}
			log.Info("identity service listening", slog.String("addr", ln.Addr().String()), slog.String("trust_domain", srv.TrustDomain), slog.Duration("cert_lifetime", lifetime))
			return srv.Serve(cmd.Context(), ln)
		},
	}
	f := cmd.Flags()
	f.String("dir", "identity", "directory written by 'mesh identity init'")
	f.String("addr", "127.0.0.1:8443", "address to listen on")
	f.String("trust-domain", "cluster.local", "trust domain of the identities issued")
	f.Duration("cert-lifetime", identity.DefaultLifetime, "lifetime of the certificates issued")
	return cmd
}

func newIdentityTokenCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Issue a workload token for a proxy",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			ns, sa := v.GetString("namespace"), v.GetString("service-account")
			if ns == "" || sa == "" {
				return usagef("--namespace and --service-account are required")
			}
			dir, err := identity.LoadDir(v.GetString("dir"))
			if err != nil {
				return err
			}
			fmt.Fprintln(s.Out, dir.Tokens.Issue(identity.Workload{Namespace: ns, ServiceAccount: sa}, v.GetDuration("ttl")))
			return nil
		},
	}
	f := cmd.Flags()
	f.String("dir", "identity", "directory written by 'mesh identity init'")
	f.String("namespace", "", "workload namespace")
	f.String("service-account", "", "workload service account")
	f.Duration("ttl", 24*time.Hour, "how long the token is valid")
	return cmd
}
