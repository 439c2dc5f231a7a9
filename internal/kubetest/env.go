package kubetest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/meshproj/mesh/internal/freeport"
	"github.com/meshproj/mesh/pki"
)

// Env is a running etcd and kube-apiserver.
type Env struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// CA is the PEM CA that signed the API server's certificate.
	CA  []byte
	Dir string
	// ServiceAccountIssuer is the issuer of tokens the API server signs.
	ServiceAccountIssuer string
	// ServiceAccountKey is the PEM key the API server signs tokens with;
	// tests use it to forge tokens the API server must refuse (expired).
	ServiceAccountKey string
}

// Kubeconfig writes a kubeconfig for the admin and returns its path.
func (e *Env) Kubeconfig() (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: e.Config.Host, CertificateAuthorityData: e.CA}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: e.Config.CertData, ClientKeyData: e.Config.KeyData}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "admin"}
	cfg.CurrentContext = "kubetest"
	path := filepath.Join(e.Dir, "kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// Options tune the API server.
type Options struct {
	// ExtraArgs are appended to kube-apiserver's arguments.
	ExtraArgs []string
}

// Start runs etcd and kube-apiserver for the test, stopped when it ends.
// It skips the test, saying why, when etcd is not installed.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	etcd, err := Etcd()
	if err != nil {
		t.Skipf("skipped: %v (.ci/run installs it)", err)
	}
	apiserver, err := APIServer(func(s string) { t.Log(s) })
	if err != nil {
		t.Fatalf("kube-apiserver: %v", err)
	}
	dir := t.TempDir()
	env := &Env{Dir: dir, ServiceAccountIssuer: "https://kubernetes.default.svc.cluster.local"}

	etcdClient, etcdPeer := freePort(t), freePort(t)
	start(t, "etcd", etcd, "--name", "default", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:"+etcdClient, "--advertise-client-urls", "http://127.0.0.1:"+etcdClient,
		"--listen-peer-urls", "http://127.0.0.1:"+etcdPeer, "--initial-advertise-peer-urls", "http://127.0.0.1:"+etcdPeer,
		"--initial-cluster", "default=http://127.0.0.1:"+etcdPeer, "--log-level", "error")

	files, err := writeCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	env.CA = files.caPEM
	env.ServiceAccountKey = files.saKey
	port := freePort(t)
	args := []string{
		"--etcd-servers=http://127.0.0.1:" + etcdClient,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + port,
		// On loopback the API server cannot publish itself as an endpoint.
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + files.serverCert, "--tls-private-key-file=" + files.serverKey,
		"--client-ca-file=" + files.ca,
		"--service-account-key-file=" + files.saKey, "--service-account-signing-key-file=" + files.saKey,
		"--service-account-issuer=" + env.ServiceAccountIssuer,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.96.0.0/16",
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=0",
	}
	start(t, "kube-apiserver", apiserver, append(args, o.ExtraArgs...)...)

	env.Config = &rest.Config{
		Host:            "https://127.0.0.1:" + port,
		TLSClientConfig: rest.TLSClientConfig{CAData: files.caPEM, CertData: files.adminCert, KeyData: files.adminKey},
		QPS:             100, Burst: 200,
	}
	if err := env.waitReady(90 * time.Second); err != nil {
		t.Fatal(err)
	}
	return env
}

func (e *Env) waitReady(within time.Duration) error {
	tr, err := rest.TransportFor(e.Config)
	if err != nil {
		return err
	}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		resp, err := c.Get(e.Config.Host + "/readyz")
		if err == nil {
			b := new(bytes.Buffer)
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = b.String()
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready within %s: %s", within, last)
}

// start runs a process for the test and stops it, by PID, when it ends.
func start(t testing.TB, name, bin string, args ...string) {
	t.Helper()
	out := &bytes.Buffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			s := out.String()
			if len(s) > 4000 {
				s = s[len(s)-4000:]
			}
			t.Logf("%s output:\n%s", name, s)
		}
	})
}

func freePort(t testing.TB) string {
	a, err := freeport.Loopback()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(a)
	return port
}

type certFiles struct {
	ca, serverCert, serverKey, saKey string
	caPEM, adminCert, adminKey       []byte
}

// writeCerts makes the cluster CA, the API server's serving certificate, an
// admin client certificate (group system:masters) and the ServiceAccount
// token signing key.
func writeCerts(dir string) (certFiles, error) {
	var f certFiles
	now := time.Now()
	ca, err := pki.NewRoot("kubetest CA", 24*time.Hour, now)
	if err != nil {
		return f, err
	}
	srv, srvKey, err := ca.SignServer("kube-apiserver", []string{"127.0.0.1", "localhost", "kubernetes.default.svc"}, 24*time.Hour, now)
	if err != nil {
		return f, err
	}
	adminKey, err := pki.NewKey()
	if err != nil {
		return f, err
	}
	admin := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		NotBefore:    now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	adminDER, err := x509.CreateCertificate(rand.Reader, admin, ca.Cert, adminKey.Public(), ca.Key)
	if err != nil {
		return f, err
	}
	saKey, err := pki.NewKey()
	if err != nil {
		return f, err
	}
	enc := func(k *ecdsa.PrivateKey) []byte { b, _ := pki.EncodeKey(k); return b }
	f.caPEM = pki.EncodeCerts(ca.Cert)
	f.adminCert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: adminDER})
	f.adminKey = enc(adminKey)
	write := func(name string, data []byte) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, data, 0o600)
	}
	if f.ca, err = write("ca.pem", f.caPEM); err != nil {
		return f, err
	}
	if f.serverCert, err = write("apiserver.pem", pki.EncodeCerts(srv, ca.Cert)); err != nil {
		return f, err
	}
	if f.serverKey, err = write("apiserver-key.pem", enc(srvKey)); err != nil {
		return f, err
	}
	f.saKey, err = write("sa.pem", enc(saKey))
	return f, err
}
