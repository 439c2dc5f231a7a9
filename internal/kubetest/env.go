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
	"path/filepath"
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

	files certFiles
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
	// Address is where the API server listens (127.0.0.1 if empty); its
	// certificate names it too.
	Address string
	// SANs are more names and addresses for its certificate.
	SANs []string
}

// Start runs etcd and kube-apiserver for the test, stopped when it ends.
// It skips the test, saying why, when etcd is not installed.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	if _, err := Etcd(); err != nil {
		t.Skipf("skipped: %v (.ci/run installs it)", err)
	}
	dir := t.TempDir()
	p := &procs{dir: dir}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(p.tails(4000))
		}
		p.stopAll()
	})
	env, err := startEnv(p, dir, o, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// startEnv runs etcd and kube-apiserver as p's processes, with their files
// in dir.
func startEnv(p *procs, dir string, o Options, log func(string)) (*Env, error) {
	etcd, err := Etcd()
	if err != nil {
		return nil, err
	}
	apiserver, err := APIServer(log)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver: %w", err)
	}
	env := &Env{Dir: dir, ServiceAccountIssuer: "https://kubernetes.default.svc.cluster.local"}
	addr := o.Address
	if addr == "" {
		addr = "127.0.0.1"
	}
	etcdClient, etcdPeer, err := freePorts2()
	if err != nil {
		return nil, err
	}
	if err := p.start("etcd", etcd, "--name", "default", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:"+etcdClient, "--advertise-client-urls", "http://127.0.0.1:"+etcdClient,
		"--listen-peer-urls", "http://127.0.0.1:"+etcdPeer, "--initial-advertise-peer-urls", "http://127.0.0.1:"+etcdPeer,
		"--initial-cluster", "default=http://127.0.0.1:"+etcdPeer, "--log-level", "error"); err != nil {
		return nil, err
	}

	files, err := writeCerts(dir, append([]string{addr}, o.SANs...))
	if err != nil {
		return nil, err
	}
	env.CA = files.caPEM
	env.ServiceAccountKey = files.saKey
	env.files = files
	port, err := freeport.Loopback()
	if err != nil {
		return nil, err
	}
	_, port, _ = net.SplitHostPort(port)
	args := []string{
		"--etcd-servers=http://127.0.0.1:" + etcdClient,
		"--bind-address=" + addr, "--advertise-address=" + addr, "--secure-port=" + port,
		// The tests publish the API server's endpoint themselves, where
		// they want it.
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + files.serverCert, "--tls-private-key-file=" + files.serverKey,
		"--client-ca-file=" + files.ca,
		"--service-account-key-file=" + files.saKey, "--service-account-signing-key-file=" + files.saKey,
		"--service-account-issuer=" + env.ServiceAccountIssuer,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=0",
	}
	if err := p.start("kube-apiserver", apiserver, append(args, o.ExtraArgs...)...); err != nil {
		return nil, err
	}
	env.Config = &rest.Config{
		Host:            "https://" + net.JoinHostPort(addr, port),
		TLSClientConfig: rest.TLSClientConfig{CAData: files.caPEM, CertData: files.adminCert, KeyData: files.adminKey},
		QPS:             100, Burst: 200,
	}
	return env, env.waitReady(90 * time.Second)
}

// ServiceCIDR is the Services' range; the kubernetes Service is its first
// address.
const ServiceCIDR = "10.96.0.0/16"

func freePorts2() (string, string, error) {
	var ports [2]string
	for i := range ports {
		a, err := freeport.Loopback()
		if err != nil {
			return "", "", err
		}
		_, ports[i], _ = net.SplitHostPort(a)
	}
	return ports[0], ports[1], nil
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

type certFiles struct {
	ca, serverCert, serverKey, saKey string
	adminCertFile, adminKeyFile      string
	caPEM, adminCert, adminKey       []byte
	root                             *pki.CA
}

// writeCerts makes the cluster CA, the API server's serving certificate, an
// admin client certificate (group system:masters) and the ServiceAccount
// token signing key.
func writeCerts(dir string, sans []string) (certFiles, error) {
	var f certFiles
	now := time.Now()
	ca, err := pki.NewRoot("kubetest CA", 24*time.Hour, now)
	if err != nil {
		return f, err
	}
	srv, srvKey, err := ca.SignServer("kube-apiserver", append([]string{"127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}, sans...), 24*time.Hour, now)
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
	if f.adminCertFile, err = write("admin.pem", f.adminCert); err != nil {
		return f, err
	}
	if f.adminKeyFile, err = write("admin-key.pem", f.adminKey); err != nil {
		return f, err
	}
	f.root = ca
	f.saKey, err = write("sa.pem", enc(saKey))
	return f, err
}
