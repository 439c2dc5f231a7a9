package cli

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/meshproj/mesh/inject"
	"github.com/meshproj/mesh/kubeapi"
	"github.com/meshproj/mesh/manifest"
	"github.com/meshproj/mesh/pki"
	"github.com/meshproj/mesh/wellknown"
)

func newInjectCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inject FILE|DIR|URL|- ...",
		Short: "Add the mesh proxy to workloads in Kubernetes manifests",
		Long: `Add the mesh proxy, and the init step that routes the pod's traffic through it,
to every workload in the manifests (Deployment, StatefulSet, DaemonSet,
ReplicaSet, ReplicationController, Job, CronJob, Pod; also inside a List). Other
objects pass through unchanged, in order. The result goes to stdout in the
input's format (YAML or JSON); what happened to each object goes to stderr.

Pods with hostNetwork, in kube-system, or annotated mesh.io/inject: disabled are
skipped; injected workloads are left as they are. Settings come from
config.mesh.io/ annotations on the workload or its pod template; the flags below
write those annotations.`,
		Example: `  mesh inject deploy.yaml | kubectl apply -f -
  kubectl get deploy -o yaml | mesh inject - | kubectl apply -f -
  mesh inject ./k8s/ --skip-outbound-ports 25 --native-sidecar=false`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			opt := inject.DefaultOptions(proxyVersion(v.GetString("proxy-version")))
			opt.NativeSidecar = v.GetBool("native-sidecar")
			opt.Image = v.GetString("image")
			opt.Config = map[string]string{}
			for _, k := range wellknown.ConfigKeys {
				if cmd.Flags().Changed(k) || v.IsSet(k) && v.GetString(k) != "" {
					opt.Config[k] = v.GetString(k)
				}
			}
			anchors := sync.OnceValues(func() (string, error) { return trustAnchors(cmd.Context(), v) })
			return transform(s, args, func(o map[string]any) ([]inject.Result, error) {
				// The anchors are looked for once there is a workload to inject.
				if opt.TrustAnchors == "" && (inject.TemplatePath(str(o["kind"])) != nil || o["kind"] == "List") {
					a, err := anchors()
					if err != nil {
						return nil, err
					}
					opt.TrustAnchors = a
				}
				return inject.Inject(o, opt)
			})
		},
	}
	f := cmd.Flags()
	f.String("identity-trust-anchors-file", "", "PEM file of the trust anchors to give the proxies (default: read from the cluster, ConfigMap mesh-identity-trust-anchors in --mesh-namespace)")
	f.String("kubeconfig", "", "kubeconfig to read the trust anchors with (default $KUBECONFIG, then ~/.kube/config)")
	f.String("mesh-namespace", "mesh-system", "the control plane's namespace")
	f.Bool("native-sidecar", true, "run the proxy as a native sidecar (Kubernetes 1.29+); false: as the first container")
	f.String("proxy-version", "", "proxy version to inject (default: this binary's)")
	f.String("image", wellknown.Image, "proxy image, without tag")
	f.String(wellknown.SkipInboundPorts, "", "inbound ports that bypass the proxy, such as 9090,9100")
	f.String(wellknown.SkipOutboundPorts, "", "outbound ports that bypass the proxy, such as 25")
	f.String(wellknown.SkipOutboundCIDRs, "", "destinations that bypass the proxy, such as 169.254.169.254/32")
	f.String(wellknown.OpaquePorts, "", "ports proxied as TCP without protocol detection, such as 3306")
	f.String(wellknown.ProxyCPURequest, "", "proxy CPU request (default 100m)")
	f.String(wellknown.ProxyCPULimit, "", "proxy CPU limit (default none)")
	f.String(wellknown.ProxyMemRequest, "", "proxy memory request (default 20Mi)")
	f.String(wellknown.ProxyMemLimit, "", "proxy memory limit (default 250Mi)")
	f.String(wellknown.ProxyLogLevel, "", "proxy log level (default info)")
	f.String(wellknown.ProxyImage, "", "full proxy image, overriding --image and --proxy-version")
	f.String(wellknown.AccessLog, "", "the proxy's access log: json, a line per request on its standard output (default: none)")
	f.String(wellknown.TraceCollector, "", "where the proxy sends spans: an OTLP/HTTP collector, host:port or URL (default: the install's; none)")
	f.String(wellknown.TraceSampling, "", "share of requests without a trace context that the proxy starts a trace for, 0 to 1 (default: the install's; 0)")
	f.String(wellknown.DefaultInboundPolicy, "", "the proxy's inbound policy for ports no Server selects: all-unauthenticated, all-authenticated, cluster-authenticated, deny or audit (default: the install's)")
	return cmd
}

// trustAnchors are the anchors injected proxies verify peers with: the
// file given, else the cluster's.
func trustAnchors(ctx context.Context, v *viper.Viper) (string, error) {
	if path := v.GetString("identity-trust-anchors-file"); path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("reading trust anchors: %w", err)
		}
		if _, err := pki.ParseCerts(data); err != nil {
			return "", fmt.Errorf("trust anchors %s: %w", path, err)
		}
		return string(data), nil
	}
	client, err := kubeapi.Find(v.GetString("kubeconfig"))
	if err != nil {
		return "", fmt.Errorf("the proxies need the mesh's trust anchors: give --identity-trust-anchors-file, or a kubeconfig that reaches the cluster (%w)", err)
	}
	return kubeapi.ReadTrustAnchors(ctx, client, v.GetString("mesh-namespace"))
}

func str(v any) string { s, _ := v.(string); return s }

func proxyVersion(flag string) string {
	if flag != "" {
		return flag
	}
	return BuildVersion().Version
}

func newUninjectCommand(s Streams) *cobra.Command {
	return &cobra.Command{
		Use:   "uninject FILE|DIR|URL|- ...",
		Short: "Remove the mesh proxy from workloads in Kubernetes manifests",
		Long: `Remove what mesh inject added, restoring each workload exactly as it was
(annotations inject overwrote get their old values back). Output and report as
for inject.`,
		Example: `  kubectl get deploy web -o yaml | mesh uninject - | kubectl apply -f -`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return transform(s, args, inject.Uninject)
		},
	}
}

// transform reads the inputs, applies f, and prints the result only if
// every object succeeded, so that a pipe into kubectl never gets half.
func transform(s Streams, args []string, f func(map[string]any) ([]inject.Result, error)) error {
	sources, err := manifest.Read(args, s.In)
	if err != nil {
		return err
	}
	inputs := make([]inject.Input, len(sources))
	for i, src := range sources {
		inputs[i] = inject.Input{Name: src.Name, Data: src.Data}
	}
	// A workload must have the shape Kubernetes requires before it is
	// rewritten; the first that does not stops everything, printing nothing.
	checked := func(o map[string]any) ([]inject.Result, error) {
		if err := manifest.CheckShape(o); err != nil {
			return nil, err
		}
		return f(o)
	}
	out, report, err := inject.Transform(inputs, checked)
	if err != nil {
		return err
	}
	if _, err := s.Out.Write(out); err != nil {
		return err
	}
	for _, r := range report {
		fmt.Fprintln(s.ErrOut, r)
	}
	return nil
}

func newAwaitCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:    "await",
		Short:  "Wait until the proxy is ready (a postStart hook for proxies that are not native sidecars)",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), v.GetDuration("timeout"))
			defer cancel()
			url := "http://" + v.GetString("admin-addr") + "/ready"
			for {
				req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						return nil
					}
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("proxy at %s not ready after %s", url, v.GetDuration("timeout"))
				case <-time.After(100 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().String("admin-addr", net.JoinHostPort("127.0.0.1", strconv.Itoa(wellknown.AdminPort)), "the proxy's admin address")
	cmd.Flags().Duration("timeout", 2*time.Minute, "how long to wait")
	return cmd
}
