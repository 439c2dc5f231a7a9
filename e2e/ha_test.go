package e2e

import (
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshproj/mesh/internal/kubetest"
)

// serviceIP stands in for a Service's virtual IP in front of controller
// replicas, as kube-proxy is: each new connection goes to the first
// replica that accepts it, in order, so one that died is passed over.
// Its connections die with the replica they reached.
type serviceIP struct {
	ln       net.Listener
	replicas []string
	mu       sync.Mutex
	closed   bool
	conns    map[net.Conn]bool
	wg       sync.WaitGroup
}

func newServiceIP(t *testing.T, replicas ...string) *serviceIP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &serviceIP{ln: ln, replicas: replicas, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *serviceIP) addr() string { return s.ln.Addr().String() }

func (s *serviceIP) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		var up net.Conn
		for _, r := range s.replicas {
			if up, err = net.DialTimeout("tcp", r, time.Second); err == nil {
				break
			}
		}
		if up == nil {
			c.Close()
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		s.conns[c], s.conns[up] = true, true
		s.wg.Add(2)
		s.mu.Unlock()
		go s.pipe(up, c)
		go s.pipe(c, up)
	}
}

// pipe copies one way; when either side ends, the pair is closed.
func (s *serviceIP) pipe(dst, src net.Conn) {
	defer s.wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
	s.mu.Lock()
	delete(s.conns, dst)
	delete(s.conns, src)
	s.mu.Unlock()
}

// controllerStreams is how many xDS streams a controller replica serves.
func controllerStreams(t *testing.T, k *kubeController) float64 {
	t.Helper()
	resp, err := http.Get("http://" + k.admin + "/metrics")
	if err != nil {
		return -1 // not up (yet, or any more)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	n, _ := metricSum(string(b), "destination_streams")
	return n
}

// TestAProxyMovesBetweenControllerReplicas: two controller replicas serve
// discovery behind one address. Each in turn is killed while traffic
// flows; the proxy moves to the other without a failed request, never
// loses the service or any of its endpoints meanwhile, and follows a
// change that only the surviving replica can tell it of.
func TestAProxyMovesBetweenControllerReplicas(t *testing.T) {
	env := kubetest.Start(t, kubetest.Options{})
	client := kubernetes.NewForConfigOrDie(env.Config)
	ctx := t.Context()
	a := newKubeController(t, env, client)
	b := *a // the same cluster, certificates and trust anchors; addresses of its own
	b.xds, b.identity, b.admin, b.webhook = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	a.extra, b.extra = []string{"--identity", "replica-a"}, []string{"--identity", "replica-b"}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := newPodNetwork(t)
	const port = 8080
	ips, bs := pods.backends(t, 4, port)
	if _, err := client.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	slices := client.DiscoveryV1().EndpointSlices("shop")
	if _, err := slices.Create(ctx, endpointSlice("shop", "web-1", "web", "http", port, ips[:2]...), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.start(t)
	b.start(t)
	vip := newServiceIP(t, a.xds, b.xds)
	mp := xdsProxy(t, vip.addr(), "shop")
	c := newClient(mp.outbound)
	if got := hitsAfter(t, c, "web", 10, bs); got[0]+got[1] != 10 {
		t.Fatalf("before any failover: %v", got)
	}

	load := startLoad(t, c, "web.shop:80", 2, 40000, 90*time.Second)
	// failover kills the replica the proxy is on, which holds n of web's
	// endpoints, and then adds one more through the other.
	failover := func(dead, alive *kubeController, n int) {
		t.Helper()
		waitFor(t, "the proxy's stream on the replica to kill", func() bool { return controllerStreams(t, dead) > 0 })
		dead.proc.stop(9, 0) // SIGKILL: the replica's pod is gone, no goodbye
		sawDisconnected := false
		waitForWithin(t, 20*time.Second, "the proxy to reconnect to the other replica", func() bool {
			d := mp.dump(t)
			held := 0
			for _, s := range d.Services {
				if s.Authority == "web.shop.svc.cluster.local:80" {
					held = len(s.Endpoints)
				}
			}
			if held < n {
				t.Fatalf("during the failover the proxy holds %d endpoints of web; it had %d", held, n)
			}
			sawDisconnected = sawDisconnected || !d.Discovery.Backend.Connected
			return d.Discovery.Backend.Connected && controllerStreams(t, alive) > 0
		})
		es, err := slices.Get(ctx, "web-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		es.Endpoints = endpointSlice("shop", "web-1", "web", "http", port, ips[:n+1]...).Endpoints
		if _, err := slices.Update(ctx, es, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		before := bs[n].hits.Load()
		waitFor(t, "traffic to reach the endpoint only the surviving replica knows", func() bool { return bs[n].hits.Load() > before })
		t.Logf("one replica killed; the proxy (disconnected in between: %t) moved to the other and follows it", sawDisconnected)
	}
	failover(a, &b, 2)
	a.start(t)
	failover(&b, a, 3)
	load.finish(t)
	t.Logf("%d requests through two failovers, none failed", load.ok.Load())
}
