package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/internal/kubetest"
	"github.com/meshproj/mesh/pki"
)

func issuerSecret(t *testing.T, root *pki.CA, name string) *corev1.Secret {
	t.Helper()
	issuer, err := root.NewIssuer(name, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.EncodeKey(issuer.Key.(*ecdsa.PrivateKey))
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh-identity-issuer", Namespace: "mesh-system"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": pki.EncodeCerts(issuer.Cert), "tls.key": key, "ca.crt": pki.EncodeCerts(root.Cert)},
	}
}

// forgeExpiredToken signs a ServiceAccount token with the API server's own
// key but an expiry in the past.
func forgeExpiredToken(t *testing.T, env *kubetest.Env, ns, sa string) string {
	t.Helper()
	data, err := os.ReadFile(env.ServiceAccountKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParseKey(data)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	past := time.Now().Add(-time.Hour).Unix()
	signing := enc(map[string]string{"alg": "ES256", "typ": "JWT"}) + "." + enc(map[string]any{
		"iss": env.ServiceAccountIssuer, "sub": "system:serviceaccount:" + ns + ":" + sa, "aud": []string{"identity.mesh.io"},
		"exp": past, "iat": past - 600, "nbf": past - 600,
		"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]string{"name": sa}},
	})
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	_ = big.NewInt
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestControllerIdentityAndWebhookAgainstARealAPIServer(t *testing.T) {
	env := kubetest.Start(t, kubetest.Options{})
	client := kubernetes.NewForConfigOrDie(env.Config)
	ctx := t.Context()
	mustCreate := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ctrl := newKubeController(t, env, client)
	root, idAddr, admin, whAddr, whCA := ctrl.root, ctrl.identity, ctrl.admin, ctrl.webhook, ctrl.webhookCA
	for _, ns := range []struct {
		name   string
		labels map[string]string
	}{{"shop", nil}, {"meshed", map[string]string{"mesh.io/inject": "enabled"}}, {"plain", nil}} {
		_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.name, Labels: ns.labels}}, metav1.CreateOptions{})
		mustCreate(err)
	}
	for _, sa := range [][2]string{{"shop", "web"}, {"shop", "db"}, {"meshed", "default"}, {"plain", "default"}} {
		_, err := client.CoreV1().ServiceAccounts(sa[0]).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa[1]}}, metav1.CreateOptions{})
		mustCreate(err)
	}
	ctrl.start(t)

	// Identity: a token from the TokenRequest API gets a certificate for its
	// own identity and nothing else.
	token := func(ns, sa, audience string) string {
		t.Helper()
		exp := int64(600)
		tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	idClient := identity.NewClient(idAddr, pki.Pool(root.Cert), "cluster.local")
	certify := func(sa, tok string) ([]*x509.Certificate, error) {
		key, _ := pki.NewKey()
		csr, _ := pki.NewCSR(key, pki.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: sa})
		return idClient.Certify(ctx, csr, tok)
	}
	webToken := token("shop", "web", "identity.mesh.io")
	chain, err := certify("web", webToken)
	if err != nil {
		t.Fatalf("web's own token: %v", err)
	}
	if chain[0].URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/web" || chain[1].Subject.CommonName != "issuer one" {
		t.Fatalf("issued %s by %s", chain[0].URIs[0], chain[1].Subject.CommonName)
	}
	refusals := []struct {
		name, sa, token, want string
		status                int
	}{
		{"CSR naming another identity", "db", webToken, "CSR asks for spiffe://cluster.local/ns/shop/sa/db but the token is for spiffe://cluster.local/ns/shop/sa/web", 403},
		{"token of another ServiceAccount", "web", token("shop", "db", "identity.mesh.io"), "the token is for spiffe://cluster.local/ns/shop/sa/db", 403},
		{"token for another audience", "web", token("shop", "web", "other"), "the API server refused the token", 401},
		{"expired token", "web", forgeExpiredToken(t, env, "shop", "web"), "the API server refused the token", 401},
	}
	for _, r := range refusals {
		_, err := certify(r.sa, r.token)
		var re *identity.RefusedError
		if !errors.As(err, &re) || re.Status != r.status || !strings.Contains(re.Reason, r.want) {
			t.Errorf("%s: %v; want %d %q", r.name, err, r.status, r.want)
		}
	}
	waitFor(t, "refusals to be counted", func() bool {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		n, _ := metricSum(string(b), "identity_certificates_refused_total")
		return n == 4
	})

	// A new issuer in the Secret takes effect without a restart.
	_, err = client.CoreV1().Secrets("mesh-system").Update(ctx, issuerSecret(t, root, "issuer two"), metav1.UpdateOptions{})
	mustCreate(err)
	waitFor(t, "the controller to sign with the new issuer", func() bool {
		chain, err := certify("web", webToken)
		return err == nil && chain[1].Subject.CommonName == "issuer two"
	})

	// Webhook: registered with the API server, it meshes pods in labelled
	// namespaces and leaves the others alone.
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	url := "https://" + whAddr + "/inject"
	_, err = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh-proxy-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "namespace.inject.mesh.io", AdmissionReviewVersions: []string{"v1"}, SideEffects: &none, FailurePolicy: &fail,
			ClientConfig:      admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: pki.EncodeCerts(whCA.Cert)},
			Rules:             []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"mesh.io/inject": "enabled"}},
		}},
	}, metav1.CreateOptions{})
	mustCreate(err)
	pod := func(ns string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "shop/app:1"}}}}
	}
	var meshed *corev1.Pod
	waitFor(t, "the webhook to be called", func() bool {
		p, err := client.CoreV1().Pods("meshed").Create(context.Background(), pod("meshed"), metav1.CreateOptions{})
		if err != nil {
			t.Logf("creating a pod in the meshed namespace: %v", err)
			return false
		}
		meshed = p
		return true
	})
	names := func(cs []corev1.Container) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return out
	}
	if got := names(meshed.Spec.InitContainers); len(got) != 2 || got[0] != "mesh-init" || got[1] != "mesh-proxy" {
		t.Errorf("pod in the annotated namespace has init containers %v; want mesh-init and mesh-proxy", got)
	}
	if meshed.Annotations["mesh.io/proxy-version"] == "" {
		t.Error("injected pod lacks the proxy-version annotation")
	}
	// The trust anchors travel in the proxy's spec: a pod outside
	// mesh-system cannot mount the ConfigMap they live in there.
	var anchors string
	for _, c := range meshed.Spec.InitContainers {
		for _, e := range c.Env {
			if c.Name == "mesh-proxy" && e.Name == "MESH_IDENTITY_TRUST_ANCHORS_PEM" {
				anchors = e.Value
			}
		}
	}
	if anchors != string(pki.EncodeCerts(root.Cert)) {
		t.Errorf("the injected proxy's MESH_IDENTITY_TRUST_ANCHORS_PEM is %q; want the cluster's trust anchors", anchors)
	}
	for _, v := range meshed.Spec.Volumes {
		if v.ConfigMap != nil {
			t.Errorf("the injected pod mounts ConfigMap %s, which its namespace does not have", v.ConfigMap.Name)
		}
	}
	plain, err := client.CoreV1().Pods("plain").Create(ctx, pod("plain"), metav1.CreateOptions{})
	mustCreate(err)
	if len(plain.Spec.InitContainers) != 0 || len(plain.Spec.Containers) != 1 {
		t.Errorf("pod in an unlabelled namespace was changed: %v %v", names(plain.Spec.InitContainers), names(plain.Spec.Containers))
	}

	// With the webhook down (failurePolicy Fail, as mesh install renders
	// it), a pod in a namespace that asks for the mesh is refused rather
	// than admitted without its proxy; a ReplicaSet would retry until the
	// controller is back. Pods elsewhere are not held up.
	ctrl.proc.stop(syscall.SIGTERM, 10*time.Second)
	down := pod("meshed")
	down.Name = "while-down"
	if _, err := client.CoreV1().Pods("meshed").Create(ctx, down, metav1.CreateOptions{}); err == nil {
		t.Error("with the webhook down, a pod in the meshed namespace was admitted without its proxy")
	} else if !strings.Contains(err.Error(), "namespace.inject.mesh.io") {
		t.Errorf("with the webhook down, the pod was refused for another reason: %v", err)
	}
	elsewhere := pod("plain")
	elsewhere.Name = "while-down"
	_, err = client.CoreV1().Pods("plain").Create(ctx, elsewhere, metav1.CreateOptions{})
	mustCreate(err)
	ctrl.start(t)
	back, err := client.CoreV1().Pods("meshed").Create(ctx, down, metav1.CreateOptions{})
	mustCreate(err)
	if got := names(back.Spec.InitContainers); len(got) != 2 {
		t.Errorf("once the webhook is back, the pod has init containers %v; want it meshed", got)
	}
}
