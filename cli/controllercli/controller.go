package cli

import (
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/controller"
	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/kubeapi"
	"github.com/meshproj/mesh/wellknown"
)

func newControllerCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the control plane (what mesh install deploys)",
		Long: `Run the control plane on Kubernetes: discovery over xDS (ADS over gRPC),
built from Services, EndpointSlices and Pods, for mesh proxies and proxyless
gRPC clients; the identity service, which signs proxy certificates for
ServiceAccount tokens checked with the TokenReview API; and the mutating
admission webhook that injects the proxy into pods of annotated namespaces. The issuer comes from the mesh-identity-issuer Secret and is
reloaded when the Secret changes. Every replica serves; none needs to lead.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, log, err := settingsAndLogger(cmd, s.ErrOut)
			if err != nil {
				return err
			}
			client, err := kubeClient(v.GetString("kubeconfig"))
			if err != nil {
				return err
			}
			c := controller.Config{
				Client: client, Namespace: v.GetString("namespace"), TrustDomain: v.GetString("trust-domain"),
				ClusterDomain: v.GetString("cluster-domain"), Audience: v.GetString("token-audience"),
				CertLifetime: v.GetDuration("cert-lifetime"),
				XDSAddr:      v.GetString("xds-addr"), IdentityAddr: v.GetString("identity-addr"),
				WebhookAddr: v.GetString("webhook-addr"), AdminAddr: v.GetString("admin-addr"),
				WebhookCertFile: v.GetString("webhook-cert-file"), WebhookKeyFile: v.GetString("webhook-key-file"),
				ProxyVersion: proxyVersion(v.GetString("proxy-version")), Log: log,
			}
			if err := c.Validate(); err != nil {
				return usageError{err}
			}
			return controller.Run(cmd.Context(), c)
		},
	}
	f := cmd.Flags()
	f.String("kubeconfig", "", "kubeconfig file (default: in-cluster configuration, else $KUBECONFIG)")
	f.String("namespace", "mesh-system", "the control plane's namespace")
	f.String("trust-domain", "cluster.local", "trust domain of workload identities")
	f.Duration("cert-lifetime", identity.DefaultLifetime, "lifetime of workload certificates")
	f.String("token-audience", wellknown.TokenAudience, "audience ServiceAccount tokens must be for")
	f.String("xds-addr", ":8086", "xDS (discovery) address")
	f.String("cluster-domain", "cluster.local", "the cluster's DNS domain")
	f.String("identity-addr", ":8443", "identity service address")
	f.String("webhook-addr", ":9443", "injection webhook address")
	f.String("admin-addr", ":9990", "admin address (/metrics, /ready, /live)")
	f.String("webhook-cert-file", "/var/run/mesh/webhook/tls.crt", "webhook serving certificate")
	f.String("webhook-key-file", "/var/run/mesh/webhook/tls.key", "webhook serving key")
	f.String("proxy-version", "", "proxy version the webhook injects (default: this binary's)")
	return cmd
}

// kubeClient uses the kubeconfig given, else the pod's ServiceAccount,
// else $KUBECONFIG.
func kubeClient(path string) (*kubeapi.Client, error) {
	if path != "" {
		return kubeapi.FromKubeconfig(path)
	}
	if c, err := kubeapi.InCluster(); err == nil {
		return c, nil
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		return kubeapi.FromKubeconfig(env)
	}
	if home, err := os.UserHomeDir(); err == nil {
		if p := filepath.Join(home, ".kube", "config"); fileExists(p) {
			return kubeapi.FromKubeconfig(p)
		}
	}
	return nil, usagef("not in a cluster and no kubeconfig: give --kubeconfig or set KUBECONFIG")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
