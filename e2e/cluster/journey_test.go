package cluster

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshproj/mesh/identity"
)

// TestAUserMeshesAnApplication is what README.md's Kubernetes section
// shows, step by step: each step is a user's command and what they expect
// of it, and each needs the ones before.
func TestAUserMeshesAnApplication(t *testing.T) {
	needCluster(t)
	steps := []struct {
		name string
		run  func(*testing.T)
	}{
		{"mesh install gives a ready control plane whose Services answer", installStep},
		{"the webhook meshes an application in a labelled namespace", webhookAppStep},
		{"mesh inject meshes an application in another namespace", injectAppStep},
		{"a Service's annotations set its timeout and retries, and a bad one is reported", annotationsStep},
		{"a workload that asks for sampling has its calls traced through both proxies into Jaeger", tracingStep},
		{"an HTTPRoute splits a Service's traffic to a canary and moves when its weights change", routesStep},
		{"mesh check, stat, edges, tap, top and diagnostics read the mesh through the API server", diagnosticsStep},
		{"mesh check names a pod without a proxy, and why", checkFindsUnmeshedPodsStep},
		{"a namespace that asks for deny starts its pods, refuses callers saying why, and admits what an AuthorizationPolicy names", denyNamespaceStep},
		{"an exec credential plugin works, and a missing pods/portforward right is named", rbacStep},
		{"a rollout restart, a deleted pod and a controller restart under load lose no request", restartsStep},
		{"a pod created while the webhook is down is refused, then meshed once it is back", webhookDownStep},
		{"mesh uninstall leaves nothing of the mesh", uninstallStep},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			t.Fatalf("stopping: %q failed and the steps after it need it", s.name)
		}
	}
}

func installStep(t *testing.T) {
	// Every injected proxy sends spans to the Jaeger that tracingStep runs.
	kubectl(t, meshCmd(t, "", "install", "--set", "tracing.collector=jaeger.tracing:4318"), "apply", "-f", "-")
	kubectl(t, "", "-n", "mesh-system", "rollout", "status", "deploy/mesh-controller", "--timeout=180s")
	if v := meshCmd(t, "", "version"); !strings.Contains(v, "control plane dev (mesh-system/mesh-controller, 1/1 ready)") || strings.Contains(v, "the control plane runs") {
		t.Errorf("mesh version does not give the control plane's version, the same as the client's:\n%s", v)
	}

	// Each Service answers at its ClusterIP, through kube-proxy, as a pod
	// would reach it.
	ip := func(svc string) string {
		return kubectl(t, "", "-n", "mesh-system", "get", "service", svc, "-o", "jsonpath={.spec.clusterIP}")
	}
	// The webhook: HTTPS with the certificate the API server trusts.
	caB64 := kubectl(t, "", "get", "mutatingwebhookconfiguration", "mesh-proxy-injector", "-o", "jsonpath={.webhooks[0].clientConfig.caBundle}")
	ca, err := base64.StdEncoding.DecodeString(caB64)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	if err := tlsAnswers(net.JoinHostPort(ip("mesh-webhook"), "443"), &tls.Config{RootCAs: pool, ServerName: "mesh-webhook.mesh-system.svc"}); err != nil {
		t.Errorf("webhook: %v", err)
	}
	// Identity: TLS as every proxy checks it, a chain to the trust anchors
	// for the control plane's SPIFFE ID.
	anchors := kubectl(t, "", "-n", "mesh-system", "get", "configmap", "mesh-identity-trust-anchors", "-o", `jsonpath={.data.trust-anchors\.pem}`)
	apool := x509.NewCertPool()
	if !apool.AppendCertsFromPEM([]byte(anchors)) {
		t.Fatalf("no trust anchors in mesh-identity-trust-anchors: %q", anchors)
	}
	if err := tlsAnswers(net.JoinHostPort(ip("mesh-identity"), "8443"), identity.ControlPlaneTLS(apool, "cluster.local")); err != nil {
		t.Errorf("identity: %v", err)
	}
	// Discovery: gRPC, so HTTP/2: its preface is answered with SETTINGS.
	if err := h2Answers(net.JoinHostPort(ip("mesh-destination"), "8086")); err != nil {
		t.Errorf("discovery: %v", err)
	}
}

// eventually retries check for a while: an endpoint reaches kube-proxy
// moments after its pod is ready.
func eventually(check func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func tlsAnswers(addr string, cfg *tls.Config) error {
	return eventually(func() error { return tlsHandshake(addr, cfg) })
}

func tlsHandshake(addr string, cfg *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	return conn.Close()
}

func h2Answers(addr string) error {
	return eventually(func() error { return h2Settings(addr) })
}

func h2Settings(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// The client preface, then an empty SETTINGS frame.
	if _, err := conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")); err != nil {
		return err
	}
	head := make([]byte, 9)
	if _, err := conn.Read(head); err != nil {
		return err
	}
	if head[3] != 0x4 {
		return errWant("a SETTINGS frame", head)
	}
	return nil
}

type frameError struct {
	want string
	got  []byte
}

func (e frameError) Error() string {
	return "want " + e.want + ", got " + string(bytes.ToValidUTF8(e.got, []byte("?")))
}

func errWant(want string, got []byte) error { return frameError{want, got} }

// meshAppTest runs the application's client in ns against its server, one
// replica of which is slow, and checks every call went through both
// proxies with mTLS and the client's identity.
func meshAppTest(t *testing.T, ns string, apply func(manifest string)) {
	apply(appManifest(ns))
	kubectl(t, "", "-n", ns, "rollout", "status", "deploy/server", "--timeout=180s")
	checkMeshed(t, ns, "server")
	servers := podsOf(t, ns, "server")
	if len(servers) != 2 {
		t.Fatalf("want 2 server pods, have %v", servers)
	}
	var slow, fast string
	for name := range servers {
		if slow == "" {
			slow = name
		} else {
			fast = name
		}
	}
	// One replica answers slowly; the client's proxy should notice.
	kubectl(t, "", "-n", ns, "exec", slow, "-c", "app", "--", "/app", "set-delay", "50ms")

	apply(clientJob(ns, "client", 200, 50))
	r := waitJob(t, ns, "client", 3*time.Minute)
	checkMeshed(t, ns, "client")
	if r.HTTPOK != 200 || r.GRPCOK != 20 {
		t.Errorf("client got %d of 200 HTTP and %d of 20 gRPC answers: %+v", r.HTTPOK, r.GRPCOK, r)
	}
	t.Logf("answers by server: %v (slow: %s)", r.Servers, slow)
	if r.Servers[slow] >= r.Servers[fast] {
		t.Errorf("the slow replica answered %d calls and the fast one %d: the client's proxy did not balance on latency", r.Servers[slow], r.Servers[fast])
	}
	// The server proxies saw every call over mTLS from the client's
	// ServiceAccount.
	id := `client_id="spiffe://cluster.local/ns/` + ns + `/sa/client"`
	total := 0
	for _, podIP := range servers {
		total += inboundFrom(proxyMetrics(t, podIP), `tls="true"`, id)
	}
	if total < 220 {
		t.Errorf("server proxies counted %d inbound requests with tls=\"true\" and %s; want the client's 220", total, id)
	}
}

func webhookAppStep(t *testing.T) {
	kubectl(t, "", "create", "namespace", "shop")
	kubectl(t, "", "label", "namespace", "shop", "mesh.io/inject=enabled")
	meshAppTest(t, "shop", func(m string) { kubectl(t, m, "apply", "-f", "-") })
}

func injectAppStep(t *testing.T) {
	kubectl(t, "", "create", "namespace", "shop2")
	meshAppTest(t, "shop2", func(m string) { kubectl(t, meshCmd(t, m, "inject", "-"), "apply", "-f", "-") })
}

func annotationsStep(t *testing.T) {
	const ns = "shop2"
	servers := podsOf(t, ns, "server")
	for name := range servers {
		kubectl(t, "", "-n", ns, "exec", name, "-c", "app", "--", "/app", "set-delay", "300ms")
	}
	// Both replicas answer in 300ms; a request timeout of 100ms (and a
	// retry limit with a typo beside it) on the Service.
	kubectl(t, "", "-n", ns, "annotate", "service", "server", "timeout.mesh.io/request=100ms", "retry.mesh.io/limit=many")
	apply := func(m string) { kubectl(t, meshCmd(t, m, "inject", "-"), "apply", "-f", "-") }
	apply(clientJob(ns, "timeouts", 10, 20))
	r := waitJobFailed(t, ns, "timeouts", 3*time.Minute)
	if r.HTTPOK != 0 || r.HTTPFailed != 10 || len(r.Failures) == 0 || !strings.Contains(r.Failures[0], "status 504") ||
		!strings.Contains(r.Failures[0], "timed out after 100ms (timeouts.request)") {
		t.Errorf("with a 100ms timeout on a Service answering in 300ms, want every GET to end in 504 naming the timeout: %+v", r)
	}
	logs := kubectl(t, "", "-n", "mesh-system", "logs", "deploy/mesh-controller")
	if !strings.Contains(logs, `retry.mesh.io/limit: \"many\" is not a number from 0 to 10`) {
		t.Errorf("the controller did not report the bad retry.mesh.io/limit:\n%s", lastLines(logs, 20))
	}
	kubectl(t, "", "-n", ns, "annotate", "service", "server", "timeout.mesh.io/request-", "retry.mesh.io/limit-")
	for name := range servers {
		kubectl(t, "", "-n", ns, "exec", name, "-c", "app", "--", "/app", "set-delay", "0s")
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func restartsStep(t *testing.T) {
	const ns = "shop"
	// 4,000 calls at 50 a second: longer than the disruptions take.
	kubectl(t, clientJob(ns, "load", 4000, 50), "apply", "-f", "-")
	kubectl(t, "", "-n", ns, "wait", "pod", "-l", "app=load", "--for=condition=Ready", "--timeout=120s")
	time.Sleep(3 * time.Second)

	kubectl(t, "", "-n", ns, "rollout", "restart", "deploy/server")
	kubectl(t, "", "-n", ns, "rollout", "status", "deploy/server", "--timeout=180s")
	t.Log("server restarted")

	// A tap of both server pods while one is deleted: the pod that goes
	// away is named, and the other's events keep coming.
	tp := startTap(t, "tap", "deploy/server", "-n", ns, "-o", "json")
	pods := podsOf(t, ns, "server")
	var gone, stays string
	for name := range pods {
		if gone == "" {
			gone = name
		} else {
			stays = name
		}
	}
	tp.waitEvents(t, stays, 1)
	tp.waitEvents(t, gone, 1)
	kubectl(t, "", "-n", ns, "delete", "pod", gone)
	tp.waitWarning(t, gone)
	after := tp.events(stays)
	tp.waitEvents(t, stays, after+20)
	tp.stop(t)
	waitReplicas(t, ns, "server", 2)
	t.Log("a server pod deleted and replaced, reported by mesh tap, which went on with the other")

	kubectl(t, "", "-n", "mesh-system", "rollout", "restart", "deploy/mesh-controller")
	kubectl(t, "", "-n", "mesh-system", "rollout", "status", "deploy/mesh-controller", "--timeout=180s")
	t.Log("controller restarted")

	if done := kubectl(t, "", "-n", ns, "get", "job", "load", "-o", "jsonpath={.status.succeeded}{.status.failed}"); done != "" {
		t.Fatalf("the load finished before the disruptions did (make it longer): %s", done)
	}
	r := waitJob(t, ns, "load", 3*time.Minute)
	if r.HTTPOK != 4000 || r.HTTPFailed+r.GRPCFailed != 0 {
		t.Errorf("under restarts the client got %+v; want 4000 HTTP answers and no failure", r)
	}
}

// waitReplicas waits for a Deployment to have n ready replicas of its
// current template and no others.
func waitReplicas(t *testing.T, ns, deploy string, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	want := fmt.Sprintf("%d/%d/%d", n, n, n)
	for {
		got := kubectl(t, "", "-n", ns, "get", "deploy", deploy, "-o", "jsonpath={.status.readyReplicas}/{.status.updatedReplicas}/{.status.replicas}")
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("deployment %s/%s: ready/updated/all %s; want %s\n%s", ns, deploy, got, want, describe(ns))
		}
		time.Sleep(time.Second)
	}
}

func webhookDownStep(t *testing.T) {
	const ns = "shop"
	pod := `apiVersion: v1
kind: Pod
metadata: {name: lonely, namespace: shop, labels: {app: lonely}}
spec:
  containers:
  - {name: app, image: ` + appImage + `, imagePullPolicy: Never, args: [server]}
`
	kubectl(t, "", "-n", "mesh-system", "scale", "deploy/mesh-controller", "--replicas=0")
	kubectl(t, "", "-n", "mesh-system", "wait", "pod", "-l", "app.kubernetes.io/component=controller", "--for=delete", "--timeout=120s")
	out, err := cluster.Run(pod, "apply", "-f", "-")
	if err == nil || !strings.Contains(out, "mesh-webhook") {
		t.Errorf("with the webhook down, a pod in a meshed namespace was not refused naming the webhook: %v\n%s", err, out)
	}
	if got, err := cluster.Run("", "-n", ns, "get", "pod", "lonely", "-o", "name"); err == nil {
		t.Errorf("the pod exists without its proxy: %s", got)
	}
	kubectl(t, "", "-n", "mesh-system", "scale", "deploy/mesh-controller", "--replicas=1")
	kubectl(t, "", "-n", "mesh-system", "rollout", "status", "deploy/mesh-controller", "--timeout=180s")
	// What a controller of Deployments does: try again.
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := cluster.Run(pod, "apply", "-f", "-")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with the webhook back the pod is still refused: %s", out)
		}
		time.Sleep(time.Second)
	}
	kubectl(t, "", "-n", ns, "wait", "pod", "lonely", "--for=condition=Ready", "--timeout=120s")
	checkMeshed(t, ns, "lonely")
	kubectl(t, "", "-n", ns, "delete", "pod", "lonely")
}

func uninstallStep(t *testing.T) {
	kubectl(t, meshCmd(t, "", "uninstall"), "delete", "-f", "-", "--wait=true", "--timeout=180s")
	for _, check := range [][]string{
		{"get", "namespace", "-o", "name"},
		{"get", "crd", "-o", "name"},
		{"get", "clusterrole,clusterrolebinding,mutatingwebhookconfiguration,validatingwebhookconfiguration", "-o", "name"},
		{"get", "all,configmap,secret,serviceaccount,role,rolebinding", "-A", "-l", "app.kubernetes.io/part-of=mesh", "-o", "name"},
	} {
		for _, line := range strings.Split(kubectl(t, "", check...), "\n") {
			if strings.Contains(line, "mesh") && !strings.Contains(line, "mesh-test") {
				t.Errorf("left after uninstall: %s", line)
			}
		}
	}
	if v := meshCmd(t, "", "version"); !strings.Contains(v, "the mesh is not installed") {
		t.Errorf("after uninstall mesh version does not say the mesh is not installed:\n%s", v)
	}
	kubectl(t, "", "delete", "namespace", "shop", "shop2", "--timeout=180s")
}
