// Package controlplane measures the controller at scale: a real
// kube-apiserver and etcd (internal/kubetest) holding many Services and
// EndpointSlices, mesh-controller as its own process, and many simulated
// proxies in this one, each the proxy's own ADS client (proxy/discovery/xds)
// over gRPC, subscribed to a few services. Nothing here is a test: it
// reports, and asserts nothing.
//
//	go test ./bench/controlplane -run '^$' -bench Scale -benchtime 1x -timeout 60m -v
package controlplane

import (
	"context"
	"crypto/ecdsa"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshproj/mesh/discovery"
	"github.com/meshproj/mesh/internal/freeport"
	"github.com/meshproj/mesh/internal/kubetest"
	"github.com/meshproj/mesh/pki"
	"github.com/meshproj/mesh/proxy/discovery/xds"
)

var (
	sizes    = flag.String("services", "100,500,1000", "the numbers of Services to measure at, in order (10 endpoints each)")
	proxies  = flag.Int("proxies", 1000, "simulated proxies")
	perProxy = flag.Int("subscriptions", 10, "services each proxy uses")
	rate     = flag.Int("rate", 100, "endpoint changes a second during the churn")
	churnFor = flag.Duration("churn", 10*time.Second, "how long the churn lasts")
	ctrlBin  = flag.String("controller", "", "the mesh-controller binary to measure (default: build this tree's)")
	profiles = flag.String("profiles", "", "a directory to write CPU profiles of the churn to: the controller's (from its admin port) and this process's (the proxies'), per size")
)

const (
	ns           = "scale"
	epsPerSlice  = 10
	changeWithin = 10 * time.Second // a change not seen by then is lost
)

func BenchmarkScale(b *testing.B) {
	env := kubetest.Start(b, kubetest.Options{})
	cfg := *env.Config
	cfg.QPS, cfg.Burst = 2000, 2000
	client := kubernetes.NewForConfigOrDie(&cfg)
	ctx := b.Context()
	ctrl := newController(b, env, client)
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	w := &world{client: client}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < *perProxy {
			b.Fatalf("-services %q: want numbers of at least -subscriptions (%d)", s, *perProxy)
		}
		b.Run(fmt.Sprintf("services=%d/endpoints=%d/proxies=%d", n, n*epsPerSlice, *proxies), func(b *testing.B) {
			for b.Loop() {
				start := time.Now()
				w.grow(b, n)
				b.Logf("%d Services and EndpointSlices in the API server (%s to create)", n, time.Since(start).Round(time.Millisecond))
				measure(b, w, ctrl, n)
			}
		})
	}
}

// world is what the benchmark has put in the API server: slices[i] is
// service i's EndpointSlice as last written.
type world struct {
	client kubernetes.Interface
	mu     sync.Mutex
	slices []*discoveryv1.EndpointSlice
	// writing[i] is held while service i's slice is written, so that two
	// changes to one service do not conflict.
	writing []*sync.Mutex
}

func svcName(i int) string { return fmt.Sprintf("svc-%04d", i) }

func host(i int) string { return svcName(i) + "." + ns + ".svc.cluster.local" }

// grow creates Services and their slices until there are n.
func (w *world) grow(b *testing.B, n int) {
	ctx := b.Context()
	first := len(w.slices)
	w.slices = append(w.slices, make([]*discoveryv1.EndpointSlice, n-first)...)
	for range n - first {
		w.writing = append(w.writing, new(sync.Mutex))
	}
	work := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 16 {
		wg.Go(func() {
			for i := range work {
				_, err := w.client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Name: svcName(i)},
					Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
				}, metav1.CreateOptions{})
				if err != nil {
					failed.Store(err)
					continue
				}
				es, err := w.client.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice(i), metav1.CreateOptions{})
				if err != nil {
					failed.Store(err)
					continue
				}
				w.mu.Lock()
				w.slices[i] = es
				w.mu.Unlock()
			}
		})
	}
	for i := first; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}

// slice is service i's EndpointSlice: ten ready endpoints, 10.x.y.z
// (addresses nothing dials; the API server refuses loopback ones).
func slice(i int) *discoveryv1.EndpointSlice {
	name, port, ready := "http", int32(8080), true
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svcName(i), Labels: map[string]string{discoveryv1.LabelServiceName: svcName(i)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
	}
	for k := range epsPerSlice {
		a := fmt.Sprintf("10.%d.%d.%d", 1+i/250, i%250, 1+k)
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return es
}

// markerNet holds the addresses the churn writes: change c puts
// 10.250.0.0 + c in place of a service's first endpoint.
var markerNet = netip.MustParsePrefix("10.250.0.0/16")

func marker(c int) string { return fmt.Sprintf("10.250.%d.%d", c/256, c%256) }

func markerSeq(a netip.Addr) int {
	b := a.As4()
	return int(b[2])*256 + int(b[3])
}

// change writes change c to service i's slice.
func (w *world) change(ctx context.Context, i, c int) error {
	w.writing[i].Lock()
	defer w.writing[i].Unlock()
	w.mu.Lock()
	es := w.slices[i].DeepCopy()
	w.mu.Unlock()
	es.Endpoints[0].Addresses = []string{marker(c)}
	out, err := w.client.DiscoveryV1().EndpointSlices(ns).Update(ctx, es, metav1.UpdateOptions{})
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.slices[i] = out
	w.mu.Unlock()
	return nil
}

// sim is one simulated proxy: the proxy's xDS backend, and what it saw.
type sim struct {
	backend  *xds.Backend
	services []int
	mu       sync.Mutex
	// seen is when each change first arrived; states counts updates;
	// vanished counts states that lacked a service this proxy had had.
	seen     map[int]time.Time
	had      map[string]bool
	states   int
	vanished int
	last     time.Time // of the last state
}

func (s *sim) update(st discovery.State) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states++
	s.last = now
	have := map[string]bool{}
	for _, svc := range st.Services {
		have[svc.Name] = len(svc.Endpoints) > 0
		for _, ep := range svc.Endpoints {
			if a := ep.Address.Addr(); markerNet.Contains(a) {
				if c := markerSeq(a); s.seen[c].IsZero() {
					s.seen[c] = now
				}
			}
		}
	}
	for name := range s.had {
		if !have[name] {
			s.vanished++
		}
	}
	for name, ok := range have {
		if ok {
			s.had[name] = true
		}
	}
}

// measure runs the proxies against a controller that has just started
// over n services, then the churn, then a controller restart.
func measure(b *testing.B, w *world, ctrl *controller, n int) {
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()

	start := time.Now()
	ctrl.start(b)
	cpuStart := ctrl.cpu(b)
	b.Logf("controller ready in %s (RSS %.0f MB)", time.Since(start).Round(time.Millisecond), ctrl.rss(b, "VmRSS"))

	// The proxies connect and subscribe.
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	sims := make([]*sim, *proxies)
	subscribers := make([][]*sim, n)
	quiet := slog.New(slog.NewTextHandler(discard{}, nil))
	start = time.Now()
	var wg sync.WaitGroup
	var wantErr atomic.Value
	for p := range sims {
		s := &sim{seen: map[int]time.Time{}, had: map[string]bool{}, services: rng.Perm(n)[:*perProxy]}
		s.backend = &xds.Backend{Addr: ctrl.xds, NodeID: fmt.Sprintf("sim-%d.%s", p, ns), Namespace: ns, Log: quiet}
		sims[p] = s
		for _, i := range s.services {
			subscribers[i] = append(subscribers[i], s)
		}
		go s.backend.Run(ctx, s.update)
		wg.Go(func() {
			for _, i := range s.services {
				wctx, wcancel := context.WithTimeout(ctx, time.Minute)
				err := s.backend.Want(wctx, discovery.Key{Host: host(i), Port: 80})
				wcancel()
				if err != nil {
					wantErr.Store(fmt.Errorf("proxy %d, %s: %w", p, host(i), err))
				}
			}
		})
	}
	wg.Wait()
	if err, _ := wantErr.Load().(error); err != nil {
		b.Fatal(err)
	}
	subscribed := time.Since(start)
	b.Logf("%d proxies subscribed to %d services each in %s", *proxies, *perProxy, subscribed.Round(time.Millisecond))

	// Steady state.
	steadyCPU := ctrl.cpu(b)
	time.Sleep(5 * time.Second)
	steadyCPU = (ctrl.cpu(b) - steadyCPU) / 5
	rssSteady := ctrl.rss(b, "VmRSS")

	// The churn: changes to services that have subscribers, at rate a
	// second, each timed from just before it is written.
	var used []int
	for i, subs := range subscribers {
		if len(subs) > 0 {
			used = append(used, i)
		}
	}
	total := int(churnFor.Seconds() * float64(*rate))
	if total > 65536 {
		total = 65536
	}
	sent := make([]time.Time, total)
	target := make([]int, total)
	stopProfiles := startProfiles(b, ctrl, n, *churnFor)
	churnCPU, clientCPU := ctrl.cpu(b), selfCPU()
	churnStart := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	var writes sync.WaitGroup
	var writeErrs atomic.Int64
	for c := range total {
		<-tick.C
		i := used[rng.IntN(len(used))]
		target[c], sent[c] = i, time.Now()
		writes.Go(func() {
			if err := w.change(ctx, i, c); err != nil {
				writeErrs.Add(1)
			}
		})
	}
	tick.Stop()
	writes.Wait()
	churnTook := time.Since(churnStart)
	time.Sleep(changeWithin / 2) // the last changes arrive
	churnCPU = (ctrl.cpu(b) - churnCPU) / churnTook.Seconds()
	clientCPU = selfCPU() - clientCPU
	stopProfiles()
	rssChurn := ctrl.rss(b, "VmRSS")

	// Latency from the write to each subscriber, and to the last of them.
	var each, all []time.Duration
	lost := 0
	for c := range total {
		var worst time.Duration
		for _, s := range subscribers[target[c]] {
			s.mu.Lock()
			at, ok := s.seen[c]
			s.mu.Unlock()
			// A later change to the same service can replace this one
			// before it is seen; it then counts when its successor came.
			if !ok {
				at, ok = s.firstAfter(c, target)
			}
			if !ok {
				lost++
				continue
			}
			d := max(at.Sub(sent[c]), 0)
			each = append(each, d)
			worst = max(worst, d)
		}
		all = append(all, worst)
	}
	// The proxies' cost of a change: this process's CPU through the churn
	// (the 1,000 clients receiving, decoding and applying, and the writes
	// to the API server, which are the same for any proxy) over the
	// changes the proxies took in.
	perChange := clientCPU / float64(max(len(each), 1)) * 1e6

	// A controller restart: how soon every proxy has its state again, and
	// whether any was told a service had gone.
	var vanishedBefore int
	for _, s := range sims {
		s.mu.Lock()
		vanishedBefore += s.vanished
		s.mu.Unlock()
	}
	peak, cpuUsed := ctrl.rss(b, "VmHWM"), ctrl.cpu(b)-cpuStart
	ctrl.stop(b)
	restart := time.Now()
	ctrl.start(b)
	// A proxy is back once its stream to the new controller is up and has
	// had its first answer: with delta xDS the controller then sends what
	// differs from what the proxy holds, which after a restart with
	// nothing changed is nothing at all.
	var resync time.Duration
	for {
		behind := 0
		for _, s := range sims {
			st := s.backend.Status().(xds.Status) // not under s.mu: the backend calls update under its own lock
			if !st.Connected || st.Since.Before(restart) {
				behind++
			}
		}
		if behind == 0 {
			resync = time.Since(restart)
			break
		}
		if time.Since(restart) > time.Minute {
			b.Logf("after a minute %d proxies have no state from the new controller", behind)
			resync = -1
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second)
	vanished := -vanishedBefore
	for _, s := range sims {
		s.mu.Lock()
		vanished += s.vanished
		s.mu.Unlock()
	}
	cancel()

	b.ReportMetric(subscribed.Seconds(), "subscribe-s")
	b.ReportMetric(pct(each, 50), "p50-ms")
	b.ReportMetric(pct(each, 99), "p99-ms")
	b.ReportMetric(pct(all, 99), "p99-all-ms")
	b.ReportMetric(pct(each, 100), "max-ms")
	b.ReportMetric(float64(lost), "lost")
	b.ReportMetric(resync.Seconds(), "resync-s")
	b.ReportMetric(float64(vanished), "vanished")
	b.ReportMetric(rssSteady, "rss-MB")
	b.ReportMetric(peak, "peak-rss-MB")
	b.ReportMetric(steadyCPU, "cpu-steady")
	b.ReportMetric(churnCPU, "cpu-churn")
	b.ReportMetric(perChange, "proxy-us/change")
	b.Logf("| %d | %d | %d | %.1f | %.0f | %.0f | %.0f | %.0f | %d | %.1f | %d | %.0f / %.0f / %.0f | %.2f | %.2f | %.0f | %.1f |",
		n, n*epsPerSlice, *proxies, subscribed.Seconds(), pct(each, 50), pct(each, 99), pct(all, 99), pct(each, 100), lost,
		resync.Seconds(), vanished, rssSteady, rssChurn, peak, steadyCPU, churnCPU, perChange, cpuUsed)
	if writeErrs.Load() > 0 {
		b.Logf("%d of %d endpoint writes failed", writeErrs.Load(), total)
	}
	ctrl.stop(b)
}

// firstAfter is when this proxy first saw a later change to the same
// service as change c.
func (s *sim) firstAfter(c int, target []int) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first time.Time
	for later := c + 1; later < len(target); later++ {
		if target[later] != target[c] {
			continue
		}
		if at, ok := s.seen[later]; ok && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first, !first.IsZero()
}

// pct is the q-th percentile of ds, in milliseconds.
func pct(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q / 100 * float64(len(s)-1))
	return float64(s[i]) / float64(time.Millisecond)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// controller is mesh-controller as its own process against the API
// server, with the identity material and webhook certificate it needs.
type controller struct {
	bin, kubeconfig, dir string
	xds, admin           string
	cmd                  *exec.Cmd
	exited               chan struct{} // closed once cmd has exited
}

func newController(b *testing.B, env *kubetest.Env, client kubernetes.Interface) *controller {
	ctx := b.Context()
	dir := b.TempDir()
	c := &controller{dir: dir, bin: *ctrlBin, xds: addr(b), admin: addr(b)}
	if c.bin == "" {
		c.bin = filepath.Join(dir, "mesh-controller")
		if out, err := exec.Command("go", "build", "-o", c.bin, "github.com/meshproj/mesh/cmd/mesh-controller").CombinedOutput(); err != nil {
			b.Fatalf("building mesh-controller: %v\n%s", err, out)
		}
	}
	kc, err := env.Kubeconfig()
	if err != nil {
		b.Fatal(err)
	}
	c.kubeconfig = kc
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mesh-system"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	root, err := pki.NewRoot("scale anchor", 24*time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	issuer, err := root.NewIssuer("scale issuer", 24*time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	key, err := pki.EncodeKey(issuer.Key.(*ecdsa.PrivateKey))
	if err != nil {
		b.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mesh-identity-issuer", Namespace: "mesh-system"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": pki.EncodeCerts(issuer.Cert), "tls.key": key, "ca.crt": pki.EncodeCerts(root.Cert)}}
	if _, err := client.CoreV1().Secrets("mesh-system").Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	anchors := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "mesh-identity-trust-anchors", Namespace: "mesh-system"},
		Data: map[string]string{"trust-anchors.pem": string(pki.EncodeCerts(root.Cert))}}
	if _, err := client.CoreV1().ConfigMaps("mesh-system").Create(ctx, anchors, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	whCert, whKey, err := root.SignServer("webhook", []string{"127.0.0.1"}, 24*time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	whKeyPEM, err := pki.EncodeKey(whKey)
	if err != nil {
		b.Fatal(err)
	}
	for name, data := range map[string][]byte{"wh.crt": pki.EncodeCerts(whCert), "wh.key": whKeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { c.stop(b) })
	return c
}

func addr(b *testing.B) string {
	a, err := freeport.Loopback()
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// start runs the controller and waits until it is ready (synced).
func (c *controller) start(b *testing.B) {
	c.cmd = exec.Command(c.bin, "--kubeconfig", c.kubeconfig, "--xds-addr", c.xds, "--identity-addr", addr(b),
		"--webhook-addr", addr(b), "--admin-addr", c.admin, "--log-level", "warn",
		"--webhook-cert-file", filepath.Join(c.dir, "wh.crt"), "--webhook-key-file", filepath.Join(c.dir, "wh.key"))
	log, err := os.Create(filepath.Join(c.dir, "controller.log"))
	if err != nil {
		b.Fatal(err)
	}
	c.cmd.Stdout, c.cmd.Stderr = log, log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	log.Close()
	exited := make(chan struct{})
	c.exited = exited
	cmd := c.cmd
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-exited:
			out, _ := os.ReadFile(filepath.Join(c.dir, "controller.log"))
			b.Fatalf("the controller exited:\n%s", out)
		default:
		}
		resp, err := http.Get("http://" + c.admin + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(c.dir, "controller.log"))
			b.Fatalf("the controller is not ready after 2 minutes:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the controller as Kubernetes would (SIGTERM) and waits.
func (c *controller) stop(b *testing.B) {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd = nil
}

// startProfiles, with -profiles, profiles the controller and this process
// for the churn; the function it returns waits for both and writes them.
func startProfiles(b *testing.B, ctrl *controller, n int, d time.Duration) func() {
	if *profiles == "" {
		return func() {}
	}
	if err := os.MkdirAll(*profiles, 0o755); err != nil {
		b.Fatal(err)
	}
	self, err := os.Create(filepath.Join(*profiles, fmt.Sprintf("proxies-%d.pprof", n)))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(self); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", ctrl.admin, int(d.Seconds())))
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		out, err := os.Create(filepath.Join(*profiles, fmt.Sprintf("controller-%d.pprof", n)))
		if err == nil {
			_, err = io.Copy(out, resp.Body)
			out.Close()
		}
		done <- err
	}()
	return func() {
		pprof.StopCPUProfile()
		self.Close()
		if err := <-done; err != nil {
			b.Logf("the controller's profile: %v", err)
		}
	}
}

// selfCPU is this process's CPU seconds so far (user and system).
func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// cpu is the controller's CPU seconds so far (user and system).
func (c *controller) cpu(b *testing.B) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// rss is a memory figure of the controller from /proc/PID/status, in MB.
func (c *controller) rss(b *testing.B, field string) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
