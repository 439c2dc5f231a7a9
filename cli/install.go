package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/meshproj/mesh/install"
)

func installFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringP("output", "o", "yaml", "output format: yaml or json")
	f.Bool("crds", false, "render the CRDs alone (for GitOps: apply them first)")
	f.Bool("ha", false, "high availability: 3 controller replicas, a PodDisruptionBudget, anti-affinity")
	f.StringArray("set", nil, "set a value, such as controller.logLevel=debug (repeatable)")
	f.StringArrayP("values", "f", nil, "YAML file of values (repeatable; later files win)")
	f.Bool("prometheus-operator", false, "also render a PodMonitor for proxies and a ServiceMonitor for the controller")
	f.Bool("dashboards", false, "also render Grafana dashboards as ConfigMaps labelled for the Grafana sidecar")
	f.String("identity-trust-anchors-file", "", "PEM trust anchors (default: generate)")
	f.String("identity-issuer-cert-file", "", "PEM issuer certificate, signed by a trust anchor (default: generate)")
	f.String("identity-issuer-key-file", "", "PEM issuer private key (default: generate)")
	f.Bool("identity-external-issuer", false, "leave the issuer Secret to an external issuer such as cert-manager")
	f.String("webhook-ca-file", "", "PEM CA of the webhook's serving certificate (default: generate)")
	f.String("webhook-cert-file", "", "PEM webhook serving certificate (default: generate)")
	f.String("webhook-key-file", "", "PEM webhook serving key (default: generate)")
}

// renderInstall turns flags into the control plane's objects.
func renderInstall(cmd *cobra.Command, v *viper.Viper) ([]install.Object, error) {
	if v.GetBool("crds") {
		return install.CRDs()
	}
	vals := install.DefaultValues(BuildVersion().Version)
	for _, f := range v.GetStringSlice("values") {
		if err := vals.LoadFile(f); err != nil {
			return nil, err
		}
	}
	for _, kv := range v.GetStringSlice("set") {
		if err := vals.Set(kv); err != nil {
			return nil, usageError{err}
		}
	}
	for flag, dst := range map[string]*bool{"ha": &vals.HA, "prometheus-operator": &vals.PrometheusOperator, "dashboards": &vals.Dashboards, "identity-external-issuer": &vals.Identity.ExternalIssuer} {
		if v.GetBool(flag) {
			*dst = true
		}
	}
	if err := vals.Validate(); err != nil {
		return nil, err
	}
	m, err := install.Prepare(vals, install.Files{
		TrustAnchors: v.GetString("identity-trust-anchors-file"), IssuerCert: v.GetString("identity-issuer-cert-file"),
		IssuerKey: v.GetString("identity-issuer-key-file"), WebhookCA: v.GetString("webhook-ca-file"),
		WebhookCert: v.GetString("webhook-cert-file"), WebhookKey: v.GetString("webhook-key-file"),
	}, time.Now())
	if err != nil {
		return nil, err
	}
	return install.Objects(vals, m)
}

func newInstallCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Render the control plane's manifests, for kubectl apply",
		Long: `Render every object of the control plane, in the order to apply them: the
mesh-system namespace, the policy CRDs, RBAC, identity material, the
controller Deployment and its Services, and the injection webhook. The output
is the same for the same values and material.

Identity material is generated unless given as files (validated: chain,
expiry, key match) or left to an external issuer such as cert-manager.`,
		Example: `  mesh install | kubectl apply -f -
  mesh install --crds > crds.yaml          # GitOps: CRDs first
  mesh install --ha --set controller.logLevel=debug -o json
  mesh install --identity-trust-anchors-file ca.pem \
    --identity-issuer-cert-file issuer.crt --identity-issuer-key-file issuer.key`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			objs, err := renderInstall(cmd, v)
			if err != nil {
				return err
			}
			return install.Encode(s.Out, objs, v.GetString("output"))
		},
	}
	installFlags(cmd)
	return cmd
}

func newUninstallCommand(s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "uninstall",
		Short:   "List every object install creates, for kubectl delete",
		Example: `  mesh uninstall | kubectl delete -f -`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := settings(cmd)
			if err != nil {
				return err
			}
			objs, err := renderInstall(cmd, v)
			if err != nil {
				return fmt.Errorf("working out what install created: %w", err)
			}
			return install.Encode(s.Out, install.Uninstall(objs), v.GetString("output"))
		},
	}
	installFlags(cmd)
	return cmd
}
