package pki

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"
)

func chainFor(t *testing.T, root *CA, id ID, lifetime time.Duration) []*x509.Certificate {
	t.Helper()
	issuer, err := root.NewIssuer("issuer", 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewKey()
	der, err := NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	csr, got, err := ParseCSR(der)
	if err != nil || got != id {
		t.Fatalf("ParseCSR = %v, %v", got, err)
	}
	leaf, err := issuer.Sign(csr, id, lifetime, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{leaf, issuer.Cert}
}

func TestIssueAndVerifyWithRotatedAnchors(t *testing.T) {
	oldRoot, _ := NewRoot("old", 365*24*time.Hour, time.Now())
	newRoot, _ := NewRoot("new", 365*24*time.Hour, time.Now())
	id := ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
	fromOld, fromNew := chainFor(t, oldRoot, id, time.Hour), chainFor(t, newRoot, id, time.Hour)
	both := Pool(oldRoot.Cert, newRoot.Cert)
	for name, chain := range map[string][]*x509.Certificate{"old": fromOld, "new": fromNew} {
		got, err := Verify(chain, both, time.Now())
		if err != nil || got != id {
			t.Errorf("%s chain with both anchors: %v, %v", name, got, err)
		}
	}
	if _, err := Verify(fromOld, Pool(newRoot.Cert), time.Now()); err == nil {
		t.Error("a chain from a root that is not trusted verified")
	}
	if _, err := Verify(fromNew, both, time.Now().Add(2*time.Hour)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired leaf: %v", err)
	}
	if _, err := Verify(fromNew[:1], both, time.Now()); err == nil {
		t.Error("a leaf without its issuer verified")
	}
}

func TestParseID(t *testing.T) {
	id, err := ParseID("spiffe://cluster.local/ns/prod/sa/api")
	if err != nil || id != (ID{"cluster.local", "prod", "api"}) || id.String() != "spiffe://cluster.local/ns/prod/sa/api" {
		t.Fatalf("%v %v", id, err)
	}
	for _, bad := range []string{"", "http://x/ns/a/sa/b", "spiffe:///ns/a/sa/b", "spiffe://td/ns/a", "spiffe://td/ns//sa/b", "spiffe://td/ns/a/sa/b/c", "spiffe://td/ns/a/sa/b?x=1"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}

func TestPEMRoundTrip(t *testing.T) {
	root, _ := NewRoot("root", time.Hour, time.Now())
	certs, err := ParseCerts(EncodeCerts(root.Cert, root.Cert))
	if err != nil || len(certs) != 2 || !certs[0].Equal(root.Cert) {
		t.Fatalf("%d certs, %v", len(certs), err)
	}
	key, _ := NewKey()
	pemKey, _ := EncodeKey(key)
	back, err := ParseKey(pemKey)
	if err != nil || !back.Equal(key) {
		t.Fatalf("key round trip: %v", err)
	}
	if _, err := ParseCerts([]byte("junk")); err == nil {
		t.Error("junk parsed as certificates")
	}
}
