package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/pki"
)

// TestH2SpecPassesOnEveryHTTP2Listener runs the HTTP/2 conformance suite
// h2spec (.ci/run installs it) against each listener where the proxy
// serves HTTP/2: outbound and inbound plaintext (apps' and unmeshed
// clients' gRPC, detected by the preface), and inbound mesh TLS, reached
// through a shim that does the mTLS handshake a client proxy would and
// then passes h2spec's bytes through untouched.
//
// One case is expected to fail on the inbound listener, and only there:
// h2spec's "invalid connection preface" is not an HTTP/2 preface, so a
// listener that detects protocols reads it as HTTP/1 and answers 400 Bad
// Request before closing, where h2spec wants the connection closed at
// once.
func TestH2SpecPassesOnEveryHTTP2Listener(t *testing.T) {
	h2spec, err := exec.LookPath("h2spec")
	if err != nil {
		t.Skip("skipped: h2spec is not installed (.ci/run installs it)")
	}
	app := startH2CBackend(t)
	mi := startIdentity(t, "24h")
	server := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", "", app)),
		args: append(mi.proxyArgs(t, "server"), "--inbound-forward", app)})
	shim := startMeshTLSShim(t, mi, server.inbound)

	for _, l := range []struct {
		name, addr string
		allowed    []string
	}{
		{"outbound", server.outbound, nil},
		{"inbound", server.inbound, []string{"3.5/2"}},
		{"inbound mesh TLS", shim, nil},
	} {
		t.Run(l.name, func(t *testing.T) {
			host, port, _ := net.SplitHostPort(l.addr)
			out, _ := exec.Command(h2spec, "-h", host, "-p", port, "-o", "5").CombinedOutput()
			failed, summary := h2specFailures(string(out))
			if summary == "" {
				t.Fatalf("h2spec gave no summary:\n%s", out)
			}
			t.Log(summary)
			for _, f := range failed {
				ok := false
				for _, a := range l.allowed {
					ok = ok || f == a
				}
				if !ok {
					t.Errorf("h2spec case %s fails on the %s listener", f, l.name)
				}
			}
			if t.Failed() {
				t.Logf("h2spec output:\n%s", out)
			}
		})
	}
}

// h2specFailures reads h2spec's report: the failed cases as SECTION/N
// ("3.5/2") and its summary line.
func h2specFailures(out string) (failed []string, summary string) {
	section := regexp.MustCompile(`^\s*(\d+(?:\.\d+)*)\. `)
	failure := regexp.MustCompile(`^\s*× (\d+): `)
	var current string
	for _, line := range strings.Split(out, "\n") {
		if m := section.FindStringSubmatch(line); m != nil {
			current = m[1]
		}
		if m := failure.FindStringSubmatch(line); m != nil {
			failed = append(failed, current+"/"+m[1])
		}
		if strings.Contains(line, " tests, ") && strings.Contains(line, " passed") {
			summary = strings.TrimSpace(line)
		}
	}
	// The report lists each failure twice: as it runs and at the end.
	seen := map[string]bool{}
	unique := failed[:0]
	for _, f := range failed {
		if !seen[f] {
			seen[f] = true
			unique = append(unique, f)
		}
	}
	return unique, summary
}

// startH2CBackend is an app that speaks HTTP/1.1 and HTTP/2 without TLS,
// as gRPC servers do, and reads every request body to its end.
func startH2CBackend(t *testing.T) string {
	return startH2CServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
}

// startMeshTLSShim listens on loopback and, for each connection, opens
// mesh TLS to target as a client proxy would (a certificate for the
// ServiceAccount h2spec, ALPN h2 with the mesh marker), then copies bytes
// both ways unchanged.
func startMeshTLSShim(t *testing.T, mi *meshIdentity, target string) string {
	t.Helper()
	id, err := pki.ParseID(spiffe("h2spec"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	anchorsPEM, err := os.ReadFile(mi.anchors)
	if err != nil {
		t.Fatal(err)
	}
	anchors := x509.NewCertPool()
	anchors.AppendCertsFromPEM(anchorsPEM)
	token := runMesh(t, "identity", "token", "--dir", mi.dir, "--namespace", "default", "--service-account", "h2spec")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	chain, err := identity.NewClient(mi.addr, anchors, trustDomain).Certify(ctx, csr, strings.TrimSpace(token))
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: key}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "mesh"},
		// The shim checks nothing of the server: the server is what is tested.
		InsecureSkipVerify: true,
	}
	return serveTCP(t, func(c net.Conn) {
		s, err := tls.Dial("tcp", target, cfg)
		if err != nil {
			return
		}
		defer s.Close()
		go func() { io.Copy(s, c); s.CloseWrite() }()
		io.Copy(c, s)
	})
}
