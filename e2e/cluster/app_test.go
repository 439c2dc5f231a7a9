package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// appManifest is the test application in namespace ns: a server
// Deployment of two replicas behind a Service that speaks plain HTTP and
// gRPC, and the ServiceAccount its clients run as. Nothing in it knows
// about the mesh.
func appManifest(ns string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata: {name: server, namespace: %[1]s}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: %[1]s}
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: %[1]s}
spec:
  selector: {app: server}
  ports:
  - {name: http, port: 8080, targetPort: 8080}
  - {name: grpc, port: 9090, targetPort: 9090, appProtocol: grpc}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: server, namespace: %[1]s}
spec:
  replicas: 2
  selector: {matchLabels: {app: server}}
  strategy: {rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}
  template:
    metadata: {labels: {app: server}}
    spec:
      serviceAccountName: server
      terminationGracePeriodSeconds: 20
      containers:
      - name: app
        image: %[2]s
        imagePullPolicy: Never
        args: [server]
        ports:
        - {name: http, containerPort: 8080}
        - {name: grpc, containerPort: 9090}
        readinessProbe:
          httpGet: {path: /ready, port: 8080}
          periodSeconds: 1
`, ns, appImage)
}

// clientJob calls the server n times at rate a second, and fails if any
// call does.
func clientJob(ns, name string, n, rate int) string {
	return fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {app: %[2]s}}
    spec:
      serviceAccountName: client
      restartPolicy: Never
      containers:
      - name: app
        image: %[3]s
        imagePullPolicy: Never
        args: [client, -http, "http://server.%[1]s.svc.cluster.local:8080/", -grpc, "server.%[1]s.svc.cluster.local:9090", -n, "%[4]d", -rate, "%[5]d"]
`, ns, name, appImage, n, rate)
}

// result is what the client printed.
type result struct {
	HTTPOK     int            `json:"http_ok"`
	HTTPFailed int            `json:"http_failed"`
	GRPCOK     int            `json:"grpc_ok"`
	GRPCFailed int            `json:"grpc_failed"`
	Servers    map[string]int `json:"servers"`
	Failures   []string       `json:"failures"`
}

// waitJob waits for a Job to finish and returns what its client printed;
// the test fails if the Job failed.
func waitJob(t *testing.T, ns, name string, within time.Duration) result {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		status := kubectl(t, "", "-n", ns, "get", "job", name, "-o", "jsonpath={.status.succeeded}/{.status.failed}")
		if status != "/" {
			logs, _ := cluster.Run("", "-n", ns, "logs", "job/"+name, "-c", "app")
			var r result
			if i := strings.Index(logs, "RESULT "); i >= 0 {
				json.Unmarshal([]byte(strings.TrimSpace(logs[i+len("RESULT "):])), &r)
			}
			if status != "1/" {
				t.Fatalf("job %s/%s failed (succeeded/failed %s):\n%s\n%s", ns, name, status, logs, describe(ns))
			}
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s/%s not finished within %s: its pods are\n%s", ns, name, within, describe(ns))
		}
		time.Sleep(time.Second)
	}
}

// waitJobFailed waits for a Job that is meant to fail (its client was
// refused) and returns what its client printed.
func waitJobFailed(t *testing.T, ns, name string, within time.Duration) result {
	t.Helper()
	deadline := time.Now().Add(within)
	for kubectl(t, "", "-n", ns, "get", "job", name, "-o", "jsonpath={.status.failed}") != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("job %s/%s has not failed within %s:\n%s", ns, name, within, describe(ns))
		}
		time.Sleep(time.Second)
	}
	logs, err := cluster.Run("", "-n", ns, "logs", "job/"+name, "-c", "app")
	var r result
	i := strings.Index(logs, "RESULT ")
	if i < 0 {
		t.Fatalf("job %s/%s failed without a result (%v):\n%s\n%s", ns, name, err, logs, describe(ns))
	}
	line, _, _ := strings.Cut(logs[i+len("RESULT "):], "\n") // the client's error may follow
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("job %s/%s: its result %q: %v", ns, name, line, err)
	}
	return r
}

// grepLines keeps the lines that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// describe is what a user would look at when something hangs.
func describe(ns string) string {
	pods, _ := cluster.Run("", "-n", ns, "get", "pods", "-o", "wide")
	events, _ := cluster.Run("", "-n", ns, "get", "events", "--sort-by=.lastTimestamp")
	if len(events) > 3000 {
		events = events[len(events)-3000:]
	}
	return pods + "\n" + events
}

// podsOf lists the names and IPs of the running pods labelled app=name.
func podsOf(t *testing.T, ns, app string) map[string]string {
	t.Helper()
	out := kubectl(t, "", "-n", ns, "get", "pods", "-l", "app="+app, "--field-selector=status.phase=Running",
		"-o", `jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.metadata.deletionTimestamp}{"\n"}{end}`)
	pods := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 { // not being deleted
			pods[f[0]] = f[1]
		}
	}
	return pods
}

// proxyMetrics reads a pod's proxy metrics from its admin port, as
// Prometheus does.
func proxyMetrics(t *testing.T, podIP string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + podIP + ":4191/metrics")
	if err != nil {
		t.Fatalf("proxy metrics of %s: %v", podIP, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// inboundFrom sums a proxy's inbound request_total over the series whose
// labels include every one of want.
func inboundFrom(metrics string, want ...string) int {
	n := 0
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, "request_total{") || !strings.Contains(line, `direction="inbound"`) {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			var v float64
			fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
			n += int(v)
		}
	}
	return n
}

// checkMeshed fails unless every pod of app in ns runs mesh init and the
// proxy as a native sidecar: ready while the pod runs, and stopped once a
// finished pod's containers are (it must not keep a Job alive).
func checkMeshed(t *testing.T, ns, app string) {
	t.Helper()
	out := kubectl(t, "", "-n", ns, "get", "pods", "-l", "app="+app, "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.status.phase} {range .spec.initContainers[*]}{.name}/{.restartPolicy},{end} {range .status.initContainerStatuses[*]}{.name}/{.ready}/{.state.terminated.reason},{end}{"\n"}{end}`)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[2] != "mesh-init/,mesh-proxy/Always," {
			t.Errorf("pod not injected as the mesh does (mesh-init, then mesh-proxy as a native sidecar): %s", line)
			continue
		}
		want := "mesh-init/true/Completed,mesh-proxy/true/,"
		if f[1] == "Succeeded" {
			want = "mesh-init/true/Completed,mesh-proxy/false/Completed,"
		}
		if f[3] != want {
			t.Errorf("pod %s (%s): init containers %s; want %s", f[0], f[1], f[3], want)
		}
	}
}
