// Package controllercli is the command line of the control plane, the
// mesh-controller binary (cmd/mesh-controller): a binary of its own, so
// that the sidecars, which run the mesh binary, do not load the
// controller's xDS server, gRPC and the Envoy types.
package controllercli

import (
	"errors"
	"os"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/spf13/cobra"

	"github.com/meshproj/mesh/cli"
	"github.com/meshproj/mesh/controller"
	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/kubeapi"
	"github.com/meshproj/mesh/wellknown"
)

// NewCommand is mesh-controller's command.
func NewCommand(s cli.Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mesh-controller",
		Short: "Run the control plane (what mesh install deploys)",
		Long: `Run the control plane on Kubernetes: discovery over xDS (ADS over gRPC),
built from Services, EndpointSlices and Pods, for mesh proxies and proxyless
gRPC clients; the identity service, which signs proxy certificates for
ServiceAccount tokens checked with the TokenReview API; and the mutating
admission webhook that injects the proxy into pods of annotated namespaces. The issuer comes from the mesh-identity-issuer Secret and is
reloaded when the Secret changes. Every replica serves; the one holding the
mesh-controller Lease also writes the status of HTTPRoutes and GRPCRoutes
attached to Services.`,
		Args: cli.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, log, err := cli.SettingsAndLogger(cmd, s.ErrOut)
			if err != nil {
				return err
			}
			client, err := kubeClient(v.GetString("kubeconfig"))
			if err != nil {
				return err
			}
			restConfig, err := restConfig(v.GetString("kubeconfig"))
			if err != nil {
				return err
			}
			id := v.GetString("identity")
			if id == "" {
				id, _ = os.Hostname() // the pod's name
			}
			c := controller.Config{
				Client: client, Namespace: v.GetString("namespace"), TrustDomain: v.GetString("trust-domain"),
				ClusterDomain: v.GetString("cluster-domain"), Audience: v.GetString("token-audience"),
				CertLifetime: v.GetDuration("cert-lifetime"),
				XDSAddr:      v.GetString("xds-addr"), IdentityAddr: v.GetString("identity-addr"),
				WebhookAddr: v.GetString("webhook-addr"), AdminAddr: v.GetString("admin-addr"),
				WebhookCertFile: v.GetString("webhook-cert-file"), WebhookKeyFile: v.GetString("webhook-key-file"),
				ProxyVersion: cli.ProxyVersion(v.GetString("proxy-version")), Log: log,
				DefaultInboundPolicy: v.GetString("default-inbound-policy"),
				TraceCollector:       v.GetString("trace-collector"), TraceSampling: v.GetString("trace-sampling"),
				Rest: restConfig, Identity: id, LeaseDuration: v.GetDuration("lease-duration"),
			}
			if err := c.Validate(); err != nil {
				return cli.UsageError(err)
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
	f.String("identity", "", "this replica's name in the leader-election Lease (default: the host name, the pod's name)")
	f.Duration("lease-duration", 15*time.Second, "how long the leader's Lease lasts unrenewed: how soon another replica takes over from one that died")
	f.String("trace-collector", "", "the OTLP/HTTP collector (host:port or URL) the webhook tells proxies to send spans to, unless an annotation config.mesh.io/trace-collector says otherwise (default: none)")
	f.String("trace-sampling", "", "the share of requests without a trace context that the webhook's proxies start a trace for, 0 to 1 (default: 0)")
	f.String("default-inbound-policy", "all-unauthenticated", "the inbound policy the webhook gives proxies for ports no Server selects, unless a namespace or workload annotation config.mesh.io/default-inbound-policy says otherwise")
	return cmd
}

// restConfig is the same choice of API server as kubeClient's, for
// client-go.
func restConfig(path string) (*rest.Config, error) {
	if path != "" {
		return clientcmd.BuildConfigFromFlags("", path)
	}
	if c, err := rest.InClusterConfig(); err == nil {
		return c, nil
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
}

// kubeClient uses the kubeconfig given, else the pod's ServiceAccount,
// else $KUBECONFIG; none is a usage error.
func kubeClient(path string) (*kubeapi.Client, error) {
	c, err := kubeapi.Find(path)
	if errors.Is(err, kubeapi.ErrNoKubeconfig) {
		return nil, cli.UsageError(err)
	}
	return c, err
}
