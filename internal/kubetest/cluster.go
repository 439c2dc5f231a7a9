package kubetest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/meshproj/mesh/internal/freeport"
	"github.com/meshproj/mesh/pki"
)

// The one-node cluster's network: pods on PodCIDR behind a bridge whose
// address, NodeIP, is the node's. The API server, the kubelet and the
// cluster DNS listen there, so pods reach them, and nowhere else but
// loopback.
const (
	PodCIDR    = "10.199.0.0/24"
	NodeIP     = "10.199.0.1"
	NodeName   = "mesh-test-node"
	bridgeName = "meshtest0"
	// PauseImage is the sandbox image containerd runs for each pod.
	PauseImage = "docker.io/meshtest/pause:1"
)

// Cluster is a running one-node Kubernetes cluster: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy
// (nftables) and CoreDNS, on this machine. It needs root.
type Cluster struct {
	*Env
	// Kubeconfig is an admin kubeconfig; Kubectl is the kubectl binary.
	Kubeconfig, Kubectl string
	Client              kubernetes.Interface

	dir        string
	procs      *procs
	containerd string // its socket
	undo       []func()
	log        func(string)
	// netnsBefore are the CNI network namespaces there were at the start.
	netnsBefore map[string]bool

	// Leftover, after Stop, names what outlived the cluster ("" if nothing).
	Leftover string
}

// Needs says what this machine lacks to run a Cluster, or "" if nothing.
func Needs() string {
	if os.Geteuid() != 0 {
		return "a cluster needs root"
	}
	var missing []string
	for _, tool := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nft", "ip", "etcd"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(CNIBinDir, p)); err != nil {
			missing = append(missing, CNIBinDir+"/"+p)
		}
	}
	if len(missing) > 0 {
		return "missing " + strings.Join(missing, ", ") + " (apt-get install containerd runc containernetworking-plugins nftables etcd-server iproute2)"
	}
	return ""
}

// CNIBinDir is where Debian's containernetworking-plugins puts them.
const CNIBinDir = "/usr/lib/cni"

// StartCluster starts a cluster; Stop stops it and removes every trace:
// pods, containers, mounts, network namespaces, the bridge and the
// nftables kube-proxy made. On an error it has stopped what it started.
func StartCluster(log func(string)) (c *Cluster, err error) {
	if need := Needs(); need != "" {
		return nil, errors.New(need)
	}
	bins, err := Build(log)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "mesh-cluster-")
	if err != nil {
		return nil, err
	}
	c = &Cluster{dir: dir, procs: &procs{dir: dir}, log: log, Kubectl: bins["kubectl"], netnsBefore: map[string]bool{}}
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			c.netnsBefore[e.Name()] = true
		}
	}
	c.undo = append(c.undo, func() { os.RemoveAll(dir) })
	defer func() {
		if err != nil {
			log(c.procs.tails(3000))
			c.Stop()
			c = nil
		}
	}()
	// One cluster at a time on this machine: they would share the bridge.
	lock, err := os.OpenFile("/run/mesh-test-cluster.lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return c, err
	}
	c.undo = append(c.undo, func() { lock.Close() })
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return c, err
	}
	steps := []struct {
		name string
		run  func(map[string]string) error
	}{
		{"network", c.network},
		{"control plane", c.controlPlane},
		{"containerd", c.startContainerd},
		{"kubelet", c.startKubelet},
		{"kube-proxy", c.startKubeProxy},
		{"CoreDNS", c.startCoreDNS},
		{"the cluster's readiness", c.waitUsable},
	}
	for _, s := range steps {
		start := time.Now()
		if err := s.run(bins); err != nil {
			return c, fmt.Errorf("cluster: %s: %w", s.name, err)
		}
		log(fmt.Sprintf("cluster: %s up in %s", s.name, time.Since(start).Round(time.Millisecond)))
	}
	return c, nil
}

// Logs is the end of every cluster process's log.
func (c *Cluster) Logs() string { return c.procs.tails(4000) }

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// network makes the bridge, with the node's address, before any pod: the
// bridge plugin then gives every pod a default route through it, which
// Service addresses need.
func (c *Cluster) network(map[string]string) error {
	if err := run("ip", "link", "add", bridgeName, "type", "bridge"); err != nil {
		return err
	}
	c.undo = append(c.undo, func() { run("ip", "link", "del", bridgeName) })
	if err := run("ip", "addr", "add", NodeIP+"/24", "dev", bridgeName); err != nil {
		return err
	}
	if err := run("ip", "link", "set", bridgeName, "up"); err != nil {
		return err
	}
	// The node routes between pods and Service addresses.
	const forward = "/proc/sys/net/ipv4/ip_forward"
	old, err := os.ReadFile(forward)
	if err != nil {
		return err
	}
	if err := os.WriteFile(forward, []byte("1"), 0o644); err != nil {
		return err
	}
	c.undo = append(c.undo, func() { os.WriteFile(forward, old, 0o644) })
	return nil
}

func (c *Cluster) controlPlane(bins map[string]string) error {
	env, err := startEnv(c.procs, c.dir, Options{
		Address: NodeIP,
		SANs:    []string{"10.96.0.1"},
		ExtraArgs: []string{
			"--allow-privileged=true",
			"--kubelet-preferred-address-types=InternalIP",
			"--kubelet-client-certificate=" + filepath.Join(c.dir, "admin.pem"),
			"--kubelet-client-key=" + filepath.Join(c.dir, "admin-key.pem"),
		},
	}, c.log)
	if err != nil {
		return err
	}
	c.Env = env
	if c.Kubeconfig, err = env.Kubeconfig(); err != nil {
		return err
	}
	if c.Client, err = kubernetes.NewForConfig(env.Config); err != nil {
		return err
	}
	if err := c.publishAPIServer(); err != nil {
		return err
	}
	if err := c.procs.start("kube-controller-manager", bins["kube-controller-manager"],
		"--kubeconfig="+c.Kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--service-account-private-key-file="+env.files.saKey, "--root-ca-file="+env.files.ca,
		"--cluster-name=mesh-test", "--controllers=*", "--v=0"); err != nil {
		return err
	}
	return c.procs.start("kube-scheduler", bins["kube-scheduler"],
		"--kubeconfig="+c.Kubeconfig, "--leader-elect=false", "--secure-port=0", "--v=0")
}

// publishAPIServer points the kubernetes Service at the API server, where
// pods reach it: the endpoint reconciler is off, since on a node the API
// server does not run in a pod.
func (c *Cluster) publishAPIServer() error {
	_, port, err := net.SplitHostPort(strings.TrimPrefix(c.Config.Host, "https://"))
	if err != nil {
		return err
	}
	var p int32
	fmt.Sscan(port, &p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The API server makes the Service itself once it is ready.
	for {
		if _, err := c.Client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{}); err == nil {
			break
		} else if ctx.Err() != nil {
			return fmt.Errorf("the kubernetes Service never appeared: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ready := true
	_, err = c.Client.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Labels: map[string]string{
			discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: "mesh-test-cluster"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{NodeIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("https"), Port: &p, Protocol: ptr(corev1.ProtocolTCP)}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

func (c *Cluster) write(name, data string) (string, error) {
	p := c.path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", err
	}
	return p, os.WriteFile(p, []byte(data), 0o644)
}

// startContainerd runs a containerd of the cluster's own: its own socket,
// root and state under the cluster's directory, and the CNI bridge.
func (c *Cluster) startContainerd(map[string]string) error {
	c.containerd = c.path("containerd", "containerd.sock")
	cni, err := c.write("cni/10-meshtest.conflist", fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "meshtest",
  "plugins": [{
    "type": "bridge", "bridge": %q,
    "isGateway": true, "isDefaultGateway": true, "hairpinMode": true, "ipMasq": false,
    "ipam": {"type": "host-local", "dataDir": %q,
             "ranges": [[{"subnet": %q, "gateway": %q, "rangeStart": "10.199.0.10"}]]}
  }]
}
`, bridgeName, c.path("cni", "ipam"), PodCIDR, NodeIP))
	if err != nil {
		return err
	}
	// The VM refuses the oom_score_adj containerd would give itself and
	// its shims; restrict_oom_score_adj keeps them within what it allows.
	cfg, err := c.write("containerd/config.toml", fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
`, c.path("containerd", "root"), c.path("containerd", "state"), c.containerd, c.containerd+".ttrpc",
		PauseImage, CNIBinDir, filepath.Dir(cni)))
	if err != nil {
		return err
	}
	if err := c.procs.start("containerd", "containerd", "--config", cfg); err != nil {
		return err
	}
	if err := waitFor(30*time.Second, func() error {
		if done, how := c.procs.exited("containerd"); done {
			return fmt.Errorf("containerd exited: %s", how)
		}
		return run("ctr", "--address", c.containerd, "version")
	}); err != nil {
		return err
	}
	pause := c.path("images", "pause.tar")
	if err := BuildImage(pause, "github.com/meshproj/mesh/internal/kubetest/pause", PauseImage); err != nil {
		return err
	}
	return c.Import(pause)
}

// Import loads an OCI image archive into the node's containerd, where the
// kubelet finds it: nothing is pulled from a registry.
func (c *Cluster) Import(archive string) error {
	return run("ctr", "--address", c.containerd, "-n", "k8s.io", "images", "import", "--no-unpack=false", archive)
}

func (c *Cluster) startKubelet(bins map[string]string) error {
	cert, key, err := c.files.root.SignServer("kubelet", []string{NodeIP, NodeName}, 24*time.Hour, time.Now())
	if err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return err
	}
	certFile, err := c.write("kubelet/serving.pem", string(pki.EncodeCerts(cert, c.files.root.Cert)))
	if err != nil {
		return err
	}
	keyFile, err := c.write("kubelet/serving-key.pem", string(keyPEM))
	if err != nil {
		return err
	}
	port, err := freeport.Loopback()
	if err != nil {
		return err
	}
	_, port, _ = net.SplitHostPort(port)
	resolv, err := c.write("kubelet/resolv.conf", "")
	if err != nil {
		return err
	}
	// The cgroup hierarchy here is v1: the kubelet runs on it only when
	// told, without QoS cgroups, with the cgroupfs driver containerd uses.
	cfg, err := c.write("kubelet/config.yaml", fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %s
readOnlyPort: 0
healthzPort: 0
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://%s
failCgroupV1: false
cgroupsPerQOS: false
cgroupDriver: cgroupfs
enforceNodeAllocatable: []
failSwapOn: false
clusterDNS: [%s]
clusterDomain: cluster.local
resolvConf: %s
staticPodPath: ""
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
localStorageCapacityIsolation: false
`, NodeIP, port, certFile, keyFile, c.files.ca, c.containerd, NodeIP, resolv))
	if err != nil {
		return err
	}
	if err := c.procs.start("kubelet", bins["kubelet"], "--config="+cfg, "--kubeconfig="+c.Kubeconfig,
		"--node-ip="+NodeIP, "--hostname-override="+NodeName, "--root-dir="+c.path("kubelet", "root"),
		"--cert-dir="+c.path("kubelet", "pki"), "--v=0"); err != nil {
		return err
	}
	ctx := context.Background()
	return waitFor(90*time.Second, func() error {
		if done, how := c.procs.exited("kubelet"); done {
			return fmt.Errorf("kubelet exited: %s", how)
		}
		n, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node not ready: %s", cond.Message)
			}
		}
		return errors.New("node has no Ready condition yet")
	})
}

func (c *Cluster) startKubeProxy(bins map[string]string) error {
	cfg, err := c.write("kube-proxy/config.yaml", fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: %s}
hostnameOverride: %s
clusterCIDR: %s
bindAddress: %s
healthzBindAddress: ""
metricsBindAddress: ""
nodePortAddresses: [%s/32]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, c.Kubeconfig, NodeName, PodCIDR, NodeIP, NodeIP))
	if err != nil {
		return err
	}
	c.undo = append(c.undo, func() {
		// kube-proxy leaves its tables when it stops.
		run("nft", "delete", "table", "ip", "kube-proxy")
		run("nft", "delete", "table", "ip6", "kube-proxy")
	})
	if err := c.procs.start("kube-proxy", bins["kube-proxy"], "--config="+cfg, "--v=0"); err != nil {
		return err
	}
	return waitFor(60*time.Second, func() error {
		if done, how := c.procs.exited("kube-proxy"); done {
			return fmt.Errorf("kube-proxy exited: %s", how)
		}
		out, err := exec.Command("nft", "list", "table", "ip", "kube-proxy").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "10.96.0.1") {
			return fmt.Errorf("kube-proxy has not programmed the kubernetes Service yet")
		}
		return nil
	})
}

func (c *Cluster) startCoreDNS(bins map[string]string) error {
	corefile, err := c.write("coredns/Corefile", fmt.Sprintf(`cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind %s
    errors
    cache 5
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s kubetest
        pods insecure
    }
}
`, NodeIP, c.Kubeconfig))
	if err != nil {
		return err
	}
	if err := c.procs.start("coredns", bins["coredns"], "-conf", corefile); err != nil {
		return err
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(NodeIP, "53"))
	}}
	return waitFor(60*time.Second, func() error {
		if done, how := c.procs.exited("coredns"); done {
			return fmt.Errorf("coredns exited: %s", how)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		addrs, err := r.LookupHost(ctx, "kubernetes.default.svc.cluster.local")
		if err != nil || len(addrs) == 0 || addrs[0] != "10.96.0.1" {
			return fmt.Errorf("cluster DNS gives %v, %v for the kubernetes Service", addrs, err)
		}
		return nil
	})
}

// waitUsable waits for what every pod needs: the default ServiceAccount
// and the API server's CA in the default namespace.
func (c *Cluster) waitUsable(map[string]string) error {
	ctx := context.Background()
	return waitFor(60*time.Second, func() error {
		if _, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return err
		}
		_, err := c.Client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err
	})
}

func waitFor(within time.Duration, ok func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := ok()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", within, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Stop stops the cluster and removes what it made on this machine. The
// kubelet goes first, so that it starts nothing more; then every pod
// sandbox, through containerd's CRI, which stops their containers and
// tears their networks down, so that no container, network namespace or
// address outlives the cluster; then every process by its PID; then any
// mount left under the cluster's directory, the bridge and kube-proxy's
// tables. What still outlives it is named in Leftover.
func (c *Cluster) Stop() {
	c.procs.stop("kubelet") // so that it starts nothing more
	if c.containerd != "" {
		if err := c.removeSandboxes(); err != nil {
			c.log("cluster: removing pod sandboxes: " + err.Error())
		}
	}
	c.procs.stopAll()
	unmountUnder(c.dir)
	if left := c.leftovers(); left != "" {
		c.log("cluster: left behind: " + left)
		c.Leftover = left
	}
	for i := len(c.undo) - 1; i >= 0; i-- {
		c.undo[i]()
	}
	c.undo = nil
}

// leftovers names what of the cluster outlived its processes: network
// namespaces it made, processes its containerd started, mounts.
func (c *Cluster) leftovers() string {
	var left []string
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "cni-") && !c.netnsBefore[e.Name()] {
				left = append(left, "network namespace "+e.Name())
			}
		}
	}
	if procs, err := filepath.Glob("/proc/[0-9]*/cmdline"); err == nil {
		for _, p := range procs {
			if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), c.dir+"/") {
				left = append(left, "process "+strings.Split(p, "/")[2]+" "+strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], c.dir+"/") {
				left = append(left, "mount "+f[4])
			}
		}
	}
	return strings.Join(left, "; ")
}

func (c *Cluster) cri() (*grpc.ClientConn, runtimeapi.RuntimeServiceClient, error) {
	conn, err := grpc.NewClient("unix://"+c.containerd, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return conn, runtimeapi.NewRuntimeServiceClient(conn), nil
}

// removeSandboxes stops and removes every pod sandbox, with its
// containers and its network.
func (c *Cluster) removeSandboxes() error {
	conn, rt, err := c.cri()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	var errs []error
	for _, sb := range resp.Items {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stopping %s/%s: %w", sb.Metadata.Namespace, sb.Metadata.Name, err))
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("removing %s/%s: %w", sb.Metadata.Namespace, sb.Metadata.Name, err))
		}
	}
	return errors.Join(errs...)
}

// unmountUnder unmounts every mount under dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mounts = append(mounts, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
}

// Run runs kubectl against the cluster as its admin, with stdin, and gives
// what it printed (stdout and stderr together).
func (c *Cluster) Run(stdin string, args ...string) (string, error) {
	cmd := exec.Command(c.Kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
