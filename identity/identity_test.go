package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshproj/mesh/pki"
)

type fixture struct {
	root   *pki.CA
	tokens *LocalTokens
	server *Server
	client *Client
}

func start(t *testing.T) *fixture {
	t.Helper()
	root, _ := pki.NewRoot("root", 24*time.Hour, time.Now())
	issuer, _ := root.NewIssuer("issuer", 24*time.Hour, time.Now())
	tokens, err := NewLocalTokens([]byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{TrustDomain: "cluster.local", Validator: tokens, Lifetime: time.Hour, Log: slog.New(slog.DiscardHandler)}
	s.SetIssuer(issuer)
	cfg, err := s.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: s.Handler(), TLSConfig: cfg}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return &fixture{root: root, tokens: tokens, server: s, client: NewClient(ln.Addr().String(), pki.Pool(root.Cert), "cluster.local")}
}

func csrFor(t *testing.T, id pki.ID) []byte {
	key, _ := pki.NewKey()
	der, err := pki.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestCertifyChecksTokenAgainstCSR(t *testing.T) {
	f := start(t)
	web := pki.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
	webToken := f.tokens.Issue(Workload{Namespace: "default", ServiceAccount: "web"}, time.Hour)
	chain, err := f.client.Certify(context.Background(), csrFor(t, web), webToken)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := pki.Verify(chain, pki.Pool(f.root.Cert), time.Now()); err != nil || id != web {
		t.Fatalf("issued chain: %v %v", id, err)
	}
	if life := time.Until(chain[0].NotAfter); life > time.Hour || life < 59*time.Minute {
		t.Errorf("lifetime %s, want 1h", life)
	}

	other := pki.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "db"}
	expired := f.tokens.Issue(Workload{Namespace: "default", ServiceAccount: "web"}, -time.Second)
	forged := webToken[:len(webToken)-2] + "xx"
	for name, tc := range map[string]struct {
		csr    []byte
		token  string
		status int
		reason string
	}{
		"csr for another identity": {csrFor(t, other), webToken, 403, "CSR asks for spiffe://cluster.local/ns/default/sa/db but the token is for spiffe://cluster.local/ns/default/sa/web"},
		"expired token":            {csrFor(t, web), expired, 401, "token expired"},
		"forged token":             {csrFor(t, web), forged, 401, "signature is not valid"},
		"bad csr":                  {[]byte("nope"), webToken, 400, "parsing CSR"},
	} {
		_, err := f.client.Certify(context.Background(), tc.csr, tc.token)
		var re *RefusedError
		if !errors.As(err, &re) || re.Status != tc.status || !strings.Contains(re.Reason, tc.reason) {
			t.Errorf("%s: %v; want %d %q", name, err, tc.status, tc.reason)
		}
	}
	if f.server.Refused.Load() != 4 || f.server.Issued.Load() != 1 {
		t.Errorf("issued %d refused %d", f.server.Issued.Load(), f.server.Refused.Load())
	}
}

func TestClientRefusesAnImpostorService(t *testing.T) {
	f := start(t)
	other, _ := pki.NewRoot("other", time.Hour, time.Now())
	c := NewClient(strings.TrimPrefix(f.client.URL, "https://"), pki.Pool(other.Cert), "cluster.local")
	if _, err := c.Certify(context.Background(), csrFor(t, pki.ID{TrustDomain: "cluster.local", Namespace: "a", ServiceAccount: "b"}), "t"); err == nil {
		t.Fatal("client trusted an identity service outside its anchors")
	}
}

func TestAgentGetsAndRenewsCertificate(t *testing.T) {
	f := start(t)
	f.server.Lifetime = 2 * time.Second
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(f.tokens.Issue(Workload{Namespace: "default", ServiceAccount: "web"}, time.Hour)), 0o600)
	a, err := NewAgent(pki.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}, f.client, tokenFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-a.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("no certificate within 5s")
	}
	first := a.Expiry()
	deadline := time.Now().Add(5 * time.Second)
	for a.Expiry().Equal(first) {
		if time.Now().After(deadline) {
			t.Fatal("certificate not renewed before 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if time.Until(first) < 0 {
		t.Error("renewed only after the certificate had expired")
	}
}

func TestAgentRefusesACertificateForAnotherKeyOrIdentity(t *testing.T) {
	root, _ := pki.NewRoot("root", time.Hour, time.Now())
	issuer, _ := root.NewIssuer("issuer", time.Hour, time.Now())
	web := pki.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
	a, err := NewAgent(web, nil, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sign := func(key *ecdsa.PrivateKey, id pki.ID) *x509.Certificate {
		der, err := pki.NewCSR(key, id)
		if err != nil {
			t.Fatal(err)
		}
		csr, _, err := pki.ParseCSR(der)
		if err != nil {
			t.Fatal(err)
		}
		c, err := issuer.Sign(csr, id, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	other, _ := pki.NewKey()
	if err := a.isOurs(sign(a.key, web)); err != nil {
		t.Fatalf("refused its own certificate: %v", err)
	}
	if err := a.isOurs(sign(other, web)); err == nil {
		t.Error("took a certificate for another key")
	}
	if err := a.isOurs(sign(a.key, pki.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "admin"})); err == nil {
		t.Error("took a certificate for another identity")
	}
}
