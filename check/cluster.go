package check

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshproj/mesh/install"
	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/inventory/kube"
	"github.com/meshproj/mesh/pki"
	"github.com/meshproj/mesh/wellknown"
)

// Categories of a cluster's checks, beside ControlPlane and DataPlane.
const KubernetesAPI = "kubernetes-api"

// MinKubernetes is the oldest Kubernetes the mesh supports: the proxy is a
// native sidecar (an init container that keeps running), on by default
// from 1.29.
var MinKubernetes = [2]int{1, 29}

// Cluster is what the cluster checks look at.
type Cluster struct {
	Source *kube.Source
	// Namespace of the control plane (mesh-system).
	Namespace string
	// ClientVersion is this binary's.
	ClientVersion string
	// ProxyOnly checks the data plane alone.
	ProxyOnly bool
	// Now is the time the checks compare expiry with; zero: time.Now.
	Now time.Time

	once    sync.Once
	mesh    *inventory.Mesh
	meshErr error
	cp      *kube.ControlPlane

	policyOnce sync.Once
	policy     *policyView
	policyErr  error
}

// Close stops the port-forwards the checks opened.
func (c *Cluster) Close() { c.Source.Close() }

func (c *Cluster) now() time.Time {
	if c.Now.IsZero() {
		return time.Now()
	}
	return c.Now
}

// proxies are the meshed workloads, port-forwarded once for every check
// that asks them.
func (c *Cluster) proxies(ctx context.Context) (*inventory.Mesh, error) {
	c.once.Do(func() { c.mesh, c.meshErr = c.Source.Mesh(ctx) })
	return c.mesh, c.meshErr
}

// Checks returns the checks, in order.
func (c *Cluster) Checks() []Check {
	ns := c.Namespace
	var checks []Check
	checks = append(checks,
		Check{Category: KubernetesAPI, Description: "can reach the API server", Fatal: true,
			Hint: "check the kubeconfig (--kubeconfig, KUBECONFIG, --context): kubectl get --raw /version must work",
			Run:  c.apiReachable},
		Check{Category: KubernetesAPI, Description: fmt.Sprintf("the API server's version is supported (%d.%d or newer)", MinKubernetes[0], MinKubernetes[1]),
			Hint: "the proxy runs as a native sidecar, which older clusters do not start; upgrade the cluster",
			Run:  c.apiVersion},
		Check{Category: KubernetesAPI, Description: "this machine's clock and the API server's agree",
			Hint: "certificates are checked against clocks: set up time synchronisation (NTP) here and on the nodes",
			Run:  c.clocks},
	)
	if !c.ProxyOnly {
		checks = append(checks,
			Check{Category: ControlPlane, Description: "the control plane is installed in " + ns, Fatal: true,
				Hint: "mesh install | kubectl apply -f -",
				Run:  c.installed},
			Check{Category: ControlPlane, Description: "the CRDs are installed and current",
				Hint: "apply this client's CRDs: mesh install --crds | kubectl apply -f -",
				Run:  c.crds},
			Check{Category: ControlPlane, Description: "the Gateway API's route CRDs are installed, at a release the controller reads",
				Hint: gatewayAPIHint(),
				Run:  c.gatewayAPI},
			Check{Category: ControlPlane, Description: "the controller's pods are ready",
				Hint: fmt.Sprintf("kubectl -n %s describe pods -l %s, and their logs, say why", ns, kube.ControllerSelector),
				Run:  c.controllerReady},
			Check{Category: ControlPlane, Description: "the control plane runs this client's version",
				Hint: "use a client of the control plane's version, or upgrade the control plane: mesh install | kubectl apply -f -",
				Run:  c.controlPlaneVersion},
			Check{Category: ControlPlane, Description: "the webhook answers, with the certificate its caBundle trusts",
				Hint: "render the webhook's certificate and caBundle again: mesh install | kubectl apply -f -, then kubectl -n " + ns + " rollout restart deploy/mesh-controller",
				Run:  c.webhook},
			Check{Category: ControlPlane, Description: "the trust anchors are valid and not close to expiry",
				Hint: "rotate: mesh install --identity-trust-anchors-file with the old and the new anchors in one file, restart the controller and the workloads, then drop the old anchor (README: Identity)",
				Run:  c.trustAnchors},
			Check{Category: ControlPlane, Description: "the issuer certificate is valid, signed by a trust anchor, and not close to expiry",
				Hint: "issue a new issuer from the trust anchor: mesh install --identity-trust-anchors-file ... --identity-issuer-cert-file ... --identity-issuer-key-file ... | kubectl apply -f - (the controller reloads it)",
				Run:  c.issuer},
		)
	}
	checks = append(checks,
		Check{Category: DataPlane, Description: "every running pod in a namespace that asks for the mesh has a proxy",
			Hint: "a pod made while the webhook was down, or before its namespace asked for the mesh, has none: kubectl rollout restart its workload",
			Run:  c.podsMeshed},
		Check{Category: DataPlane, Description: "every proxy is ready",
			Hint: "a proxy is ready once it has discovery and its certificate: mesh diagnostics config po/NAME and kubectl logs po/NAME -c mesh-proxy say which is missing",
			Run: c.eachProxy(func(ctx context.Context, inst inventory.Instance) (Status, string) {
				return httpOK(ctx, "http://"+inst.Admin+"/ready")
			})},
		Check{Category: DataPlane, Description: "every proxy is connected to the controller",
			Hint: "the proxy serves from its last state while it reconnects; check the controller's pods and the mesh-destination Service",
			Run:  c.eachProxy(func(ctx context.Context, inst inventory.Instance) (Status, string) { return connected(ctx, inst.Admin) })},
		Check{Category: DataPlane, Description: "every proxy runs a supported version",
			Hint: "restart the workload to get the proxy the control plane injects now: kubectl rollout restart deploy/NAME",
			Run:  c.eachProxy(c.proxyVersion)},
		Check{Category: DataPlane, Description: "every proxy has a valid certificate, not close to expiry",
			Hint: "the proxy renews at 70% of the lifetime; if it cannot, its log says why (is the controller's identity service up?)",
			Run: c.eachProxy(func(ctx context.Context, inst inventory.Instance) (Status, string) {
				return certificateFresh(ctx, inst.Admin, c.now())
			})},
	)
	return append(checks, c.policyChecks()...)
}

func (c *Cluster) apiReachable(ctx context.Context) (Status, string) {
	if _, err := c.Source.Server(ctx); err != nil {
		return Fail, err.Error()
	}
	return OK, ""
}

func (c *Cluster) apiVersion(ctx context.Context) (Status, string) {
	info, err := c.Source.Server(ctx)
	if err != nil {
		return Fail, err.Error()
	}
	major, minor, ok := kubeVersion(info)
	if !ok {
		return Warn, fmt.Sprintf("cannot tell the version from %q", info.GitVersion)
	}
	if major < MinKubernetes[0] || major == MinKubernetes[0] && minor < MinKubernetes[1] {
		return Fail, fmt.Sprintf("the API server is %s", info.GitVersion)
	}
	return OK, ""
}

// kubeVersion reads major and minor, which providers decorate ("1.30+").
func kubeVersion(info *kube.ServerInfo) (int, int, bool) {
	digits := func(s string) (int, bool) {
		s = strings.TrimRight(s, "+")
		n, err := strconv.Atoi(s)
		return n, err == nil
	}
	major, ok1 := digits(info.Major)
	minor, ok2 := digits(info.Minor)
	if ok1 && ok2 {
		return major, minor, true
	}
	parts := strings.SplitN(strings.TrimPrefix(info.GitVersion, "v"), ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, ok1 = digits(parts[0])
	minor, ok2 = digits(parts[1])
	return major, minor, ok1 && ok2
}

// clocks compares this machine's clock with the Date the API server
// answered with (to the second), allowing for the round trip.
func (c *Cluster) clocks(ctx context.Context) (Status, string) {
	before := time.Now()
	info, err := c.Source.Server(ctx)
	if err != nil {
		return Fail, err.Error()
	}
	if info.Date.IsZero() {
		return Warn, "the API server sent no Date header to compare with"
	}
	skew := info.Date.Sub(before.Add(info.RoundTrip / 2).Truncate(time.Second))
	if skew < 0 {
		skew = -skew
	}
	if limit := 5*time.Second + info.RoundTrip; skew > limit {
		return Warn, fmt.Sprintf("the API server's clock is %s apart from this machine's", skew.Round(time.Second))
	}
	return OK, ""
}

func (c *Cluster) installed(ctx context.Context) (Status, string) {
	cp, err := c.Source.ControlPlane(ctx, c.Namespace)
	if err != nil {
		return Fail, err.Error()
	}
	c.cp = cp
	return OK, ""
}

// crds compares each CRD this client installs with the cluster's: every
// version this client knows must be served, with the same schema.
func (c *Cluster) crds(ctx context.Context) (Status, string) {
	want, err := install.CRDs()
	if err != nil {
		return Fail, err.Error()
	}
	var missing, stale []string
	for _, obj := range want {
		var w crd
		if err := convert(obj, &w); err != nil {
			return Fail, err.Error()
		}
		var got crd
		err := c.Source.Get(ctx, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"+url.PathEscape(w.Metadata.Name), &got)
		if kube.IsNotFound(err) {
			missing = append(missing, w.Metadata.Name)
			continue
		}
		if err != nil {
			return Fail, err.Error()
		}
		if why := crdDiffers(&w, &got); why != "" {
			stale = append(stale, w.Metadata.Name+": "+why)
		}
	}
	switch {
	case len(missing) > 0:
		return Fail, "not installed: " + strings.Join(missing, ", ")
	case len(stale) > 0:
		return Warn, "not this client's:\n" + strings.Join(stale, "\n")
	}
	return OK, ""
}

func convert(obj any, out any) error {
	data, err := yaml.Marshal(obj)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(data, out)
}

// crd is what the check compares of a CustomResourceDefinition.
type crd struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Versions []crdVersion `json:"versions"`
	} `json:"spec"`
}

type crdVersion struct {
	Name   string `json:"name"`
	Served bool   `json:"served"`
	Schema any    `json:"schema"`
}

func crdDiffers(want, got *crd) string {
	for _, wv := range want.Spec.Versions {
		var gv *crdVersion
		for i := range got.Spec.Versions {
			if got.Spec.Versions[i].Name == wv.Name {
				gv = &got.Spec.Versions[i]
			}
		}
		switch {
		case gv == nil:
			return "version " + wv.Name + " is missing"
		case !gv.Served:
			return "version " + wv.Name + " is not served"
		case !reflect.DeepEqual(wv.Schema, gv.Schema):
			return "version " + wv.Name + " has another schema"
		}
	}
	return ""
}

func (c *Cluster) controllerReady(ctx context.Context) (Status, string) {
	pods, err := c.Source.Pods(ctx, c.Namespace, kube.ControllerSelector)
	if err != nil {
		return Fail, err.Error()
	}
	var notReady []string
	for i := range pods {
		if !kube.Ready(&pods[i]) {
			notReady = append(notReady, fmt.Sprintf("%s (%s)", pods[i].Name, podTrouble(&pods[i])))
		}
	}
	switch {
	case len(pods) == 0:
		return Fail, "no controller pod (kubectl -n " + c.Namespace + " get deploy/mesh-controller)"
	case len(notReady) == len(pods):
		return Fail, "none ready: " + strings.Join(notReady, ", ")
	case len(notReady) > 0:
		return Warn, fmt.Sprintf("%d of %d ready; not ready: %s", len(pods)-len(notReady), len(pods), strings.Join(notReady, ", "))
	}
	return OK, ""
}

// podTrouble says in a few words why a pod is not ready.
func podTrouble(p *corev1.Pod) string {
	for _, st := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if w := st.State.Waiting; w != nil && w.Reason != "" {
			return st.Name + ": " + w.Reason
		}
		if !st.Ready && st.State.Running != nil {
			return st.Name + ": running, not ready"
		}
	}
	if p.DeletionTimestamp != nil {
		return "terminating"
	}
	return string(p.Status.Phase)
}

func (c *Cluster) controlPlaneVersion(ctx context.Context) (Status, string) {
	if c.cp == nil {
		return Fail, "no control plane"
	}
	if c.cp.Version != c.ClientVersion {
		return Warn, fmt.Sprintf("the control plane runs %s and this client is %s", c.cp.Version, c.ClientVersion)
	}
	return OK, ""
}

// webhook reaches the webhook's port on a controller pod and checks that
// what it serves is what the API server will accept: a certificate for
// the webhook Service's name that chains to the caBundle.
func (c *Cluster) webhook(ctx context.Context) (Status, string) {
	var cfg webhookConfig
	if err := c.Source.Get(ctx, "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/mesh-proxy-injector", &cfg); err != nil {
		return Fail, err.Error()
	}
	if len(cfg.Webhooks) == 0 {
		return Fail, "mesh-proxy-injector has no webhooks"
	}
	addr, err := c.Source.ForwardController(ctx, c.Namespace, 9443)
	if err != nil {
		return Fail, err.Error()
	}
	warn := ""
	for _, wh := range cfg.Webhooks {
		svc := wh.ClientConfig.Service
		if svc == nil {
			return Fail, wh.Name + " calls no Service"
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(wh.ClientConfig.CABundle) {
			return Fail, wh.Name + ": the caBundle holds no certificate"
		}
		name := svc.Name + "." + svc.Namespace + ".svc"
		d := tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return Fail, fmt.Sprintf("%s: the webhook's certificate, as the API server checks it for %s: %v", wh.Name, name, err)
		}
		leaf := conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
		conn.Close()
		if left := leaf.NotAfter.Sub(c.now()); left < 30*24*time.Hour {
			warn = fmt.Sprintf("the webhook's certificate expires in %s (%s)", days(left), leaf.NotAfter.Format(time.DateOnly))
		}
	}
	// It answers an admission review, as the API server sends it.
	if status, detail := admissionAnswers(ctx, addr, cfg.Webhooks[0]); status != OK {
		return status, detail
	}
	if warn != "" {
		return Warn, warn
	}
	return OK, ""
}

// webhookConfig is what the check reads of a
// MutatingWebhookConfiguration (its own few fields, rather than the API
// package's types: they would add a megabyte to a binary every sidecar
// loads).
type webhookConfig struct {
	Webhooks []webhook `json:"webhooks"`
}

type webhook struct {
	Name         string `json:"name"`
	ClientConfig struct {
		CABundle []byte `json:"caBundle"`
		Service  *struct {
			Name      string  `json:"name"`
			Namespace string  `json:"namespace"`
			Path      *string `json:"path"`
		} `json:"service"`
	} `json:"clientConfig"`
}

func admissionAnswers(ctx context.Context, addr string, wh webhook) (Status, string) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(wh.ClientConfig.CABundle)
	name := wh.ClientConfig.Service.Name + "." + wh.ClientConfig.Service.Namespace + ".svc"
	path := "/"
	if wh.ClientConfig.Service.Path != nil {
		path = *wh.ClientConfig.Service.Path
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	// A review of a pod that asks not to be meshed: the webhook must
	// answer it, allowing it unchanged (it counts it as skipped).
	body := []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"mesh-check",` +
		`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},` +
		`"operation":"CREATE","namespace":"default","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"mesh-check",` +
		`"annotations":{"` + wellknown.AnnotationInject + `":"disabled"}},"spec":{"containers":[{"name":"app","image":"app"}]}}}}`)
	req, err := http.NewRequestWithContext(ctx, "POST", "https://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return Fail, err.Error()
	}
	req.Host = name
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return Fail, "the webhook does not answer: " + err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Fail, "the webhook answered an admission review with " + resp.Status
	}
	var review struct {
		Response *struct {
			UID     string `json:"uid"`
			Allowed bool   `json:"allowed"`
		} `json:"response"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&review); err != nil || review.Response == nil {
		return Fail, fmt.Sprintf("the webhook's answer is not an admission review (%v)", err)
	}
	if r := review.Response; r.UID != "mesh-check" || !r.Allowed {
		return Fail, fmt.Sprintf("the webhook answered uid %q allowed=%v; want uid mesh-check allowed", r.UID, r.Allowed)
	}
	return OK, ""
}

func days(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
}

func (c *Cluster) anchors(ctx context.Context) ([]*x509.Certificate, error) {
	data, err := c.Source.TrustAnchors(ctx, c.Namespace)
	if err != nil {
		return nil, err
	}
	anchors, err := pki.ParseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", c.Namespace, wellknown.TrustAnchorsConfigMap, err)
	}
	return anchors, nil
}

// freshness judges a CA certificate: expired or not yet valid fails;
// less than 60 days, or a fifth of its life, left warns.
func freshness(what string, cert *x509.Certificate, now time.Time) (Status, string) {
	switch left := cert.NotAfter.Sub(now); {
	case now.Before(cert.NotBefore):
		return Fail, fmt.Sprintf("%s %q is not valid before %s (a clock ahead where it was made?)", what, cert.Subject.CommonName, cert.NotBefore.Format(time.RFC3339))
	case left <= 0:
		return Fail, fmt.Sprintf("%s %q expired on %s", what, cert.Subject.CommonName, cert.NotAfter.Format(time.RFC3339))
	case left < 60*24*time.Hour || left < cert.NotAfter.Sub(cert.NotBefore)/5:
		return Warn, fmt.Sprintf("%s %q expires in %s (%s)", what, cert.Subject.CommonName, days(left), cert.NotAfter.Format(time.DateOnly))
	}
	return OK, ""
}

func (c *Cluster) trustAnchors(ctx context.Context) (Status, string) {
	anchors, err := c.anchors(ctx)
	if err != nil {
		return Fail, err.Error()
	}
	return worst(anchors, func(a *x509.Certificate) (Status, string) {
		if !a.IsCA {
			return Fail, fmt.Sprintf("trust anchor %q is not a CA", a.Subject.CommonName)
		}
		return freshness("trust anchor", a, c.now())
	})
}

func (c *Cluster) issuer(ctx context.Context) (Status, string) {
	var sec corev1.Secret
	err := c.Source.Get(ctx, "/api/v1/namespaces/"+url.PathEscape(c.Namespace)+"/secrets/mesh-identity-issuer", &sec)
	switch {
	case kube.IsForbidden(err):
		return Warn, "cannot read the Secret mesh-identity-issuer (needs get secrets in " + c.Namespace + "): not checked"
	case kube.IsNotFound(err):
		return Fail, "no Secret " + c.Namespace + "/mesh-identity-issuer: with --identity-external-issuer, the external issuer (cert-manager) writes it"
	case err != nil:
		return Fail, err.Error()
	}
	block, _ := pem.Decode(sec.Data["tls.crt"])
	if block == nil {
		return Fail, "mesh-identity-issuer has no certificate in tls.crt"
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return Fail, "mesh-identity-issuer tls.crt: " + err.Error()
	}
	anchors, err := c.anchors(ctx)
	if err != nil {
		return Fail, err.Error()
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pki.Pool(anchors...), CurrentTime: c.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return Fail, fmt.Sprintf("the issuer %q does not chain to the trust anchors: %v", cert.Subject.CommonName, err)
	}
	return freshness("issuer", cert, c.now())
}

// worst runs judge on each item and keeps the worst outcome, with every
// detail that is not OK.
func worst[T any](items []T, judge func(T) (Status, string)) (Status, string) {
	status := OK
	var details []string
	for _, it := range items {
		st, d := judge(it)
		if st == Fail || st == Warn && status == OK {
			status = st
		}
		if st != OK {
			details = append(details, d)
		}
	}
	return status, strings.Join(details, "\n")
}

// podsMeshed looks at every running pod in the namespaces that ask for
// the mesh (the namespace given with -n, else all of them) and names those
// without a proxy, and why.
func (c *Cluster) podsMeshed(ctx context.Context) (Status, string) {
	var nss corev1.NamespaceList
	if err := c.Source.Get(ctx, "/api/v1/namespaces?labelSelector="+url.QueryEscape(wellknown.AnnotationInject+"=enabled"), &nss); err != nil {
		return Fail, err.Error()
	}
	var problems, notes []string
	for _, n := range nss.Items {
		if c.Source.NamespaceGiven() && !c.Source.AllNamespaces() && n.Name != c.Source.Namespace() || n.Name == c.Namespace || n.Name == "kube-system" {
			continue
		}
		pods, err := c.Source.Pods(ctx, n.Name, "")
		if err != nil {
			return Fail, err.Error()
		}
		for i := range pods {
			p := &pods[i]
			if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || kube.Meshed(p) {
				continue
			}
			name := p.Namespace + "/" + p.Name
			switch {
			case p.Annotations[wellknown.AnnotationInject] == "disabled" || p.Labels[wellknown.AnnotationInject] == "disabled":
				// Opted out, as its owner asked.
			case p.Spec.HostNetwork:
				notes = append(notes, name+": uses the host's network, which the mesh cannot intercept")
			default:
				problems = append(problems, fmt.Sprintf("%s: no proxy; created %s, while the webhook was down or before %s asked for the mesh",
					name, p.CreationTimestamp.Format(time.RFC3339), n.Name))
			}
		}
	}
	sort.Strings(problems)
	sort.Strings(notes)
	switch {
	case len(problems) > 0:
		return Fail, strings.Join(append(problems, notes...), "\n")
	case len(notes) > 0:
		return Warn, strings.Join(notes, "\n")
	}
	return OK, ""
}

// eachProxy runs a check on every meshed pod's proxy and names the ones
// that fail.
func (c *Cluster) eachProxy(check func(context.Context, inventory.Instance) (Status, string)) func(context.Context) (Status, string) {
	return func(ctx context.Context) (Status, string) {
		m, err := c.proxies(ctx)
		if err != nil {
			return Fail, err.Error()
		}
		type named struct {
			ns string
			inventory.Instance
		}
		var insts []named
		for _, w := range m.Workloads {
			for _, inst := range w.Instances {
				insts = append(insts, named{w.Namespace, inst})
			}
		}
		if len(insts) == 0 {
			return OK, ""
		}
		results := make([]struct {
			st     Status
			detail string
		}, len(insts))
		var wg sync.WaitGroup
		for i, inst := range insts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i].st, results[i].detail = check(ctx, inst.Instance)
			}()
		}
		wg.Wait()
		i := 0
		return worst(insts, func(n named) (Status, string) {
			r := results[i]
			i++
			return r.st, n.ns + "/" + n.Name + ": " + r.detail
		})
	}
}

func connected(ctx context.Context, admin string) (Status, string) {
	d, err := dump(ctx, admin)
	if err != nil {
		return Fail, err.Error()
	}
	b, ok := d.Discovery.Backend.(map[string]any)
	if !ok || b["controller"] == nil {
		return Warn, "discovery is not from the controller (" + d.Discovery.Source + ")"
	}
	if up, _ := b["connected"].(bool); !up {
		return Fail, fmt.Sprintf("not connected to %v since %v: %v", b["controller"], b["since"], b["lastError"])
	}
	return OK, ""
}

func (c *Cluster) proxyVersion(_ context.Context, inst inventory.Instance) (Status, string) {
	want := c.ClientVersion
	if c.cp != nil {
		want = c.cp.Version
	}
	switch inst.ProxyVersion {
	case want:
		return OK, ""
	case "":
		return Warn, "cannot tell its version (its image has no tag)"
	}
	return Warn, fmt.Sprintf("runs %s; the control plane is %s", inst.ProxyVersion, want)
}
