// Package pki makes and checks the mesh's certificates: a long-lived trust
// anchor (root), an issuer (intermediate) that signs workload certificates,
// and short-lived leaf certificates naming a SPIFFE identity. All keys are
// ECDSA P-256. Verification is against a bundle of anchors, so that an
// anchor can be rotated with the old and the new trusted at once.
//
// It holds no state and does no I/O beyond encoding.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// ID is a workload's SPIFFE identity: spiffe://<trust-domain>/ns/<ns>/sa/<sa>.
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL returns the ID as a URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// ParseID parses a workload SPIFFE ID.
func ParseID(s string) (ID, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "spiffe" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return ID{}, fmt.Errorf("%q is not a SPIFFE ID (spiffe://trust-domain/ns/NAMESPACE/sa/SERVICEACCOUNT)", s)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
		return ID{}, fmt.Errorf("SPIFFE ID %q: path must be /ns/NAMESPACE/sa/SERVICEACCOUNT", s)
	}
	return ID{TrustDomain: u.Host, Namespace: parts[1], ServiceAccount: parts[3]}, nil
}

// NewKey makes an ECDSA P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// CA is a certificate that signs others, with its key and the chain above
// it (empty for a root).
type CA struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate
}

// clockSkew backdates certificates so that a peer whose clock is a little
// behind accepts them.
const clockSkew = time.Minute

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func keyID(pub crypto.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return sum[:20]
}

// NewRoot makes a self-signed trust anchor.
func NewRoot(commonName string, lifetime time.Duration, now time.Time) (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          keyID(key.Public()),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// NewIssuer makes an intermediate CA signed by ca.
func (ca *CA) NewIssuer(commonName string, lifetime time.Duration, now time.Time) (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	cert, err := ca.issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(key.Public()),
	}, key.Public(), lifetime, now)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Chain: append([]*x509.Certificate{ca.Cert}, ca.Chain...)}, nil
}

// NewCSR makes a certificate request for id, signed by key.
func NewCSR(key crypto.Signer, id ID) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id.ServiceAccount + "." + id.Namespace},
		URIs:    []*url.URL{id.URL()},
	}, key)
}

// ParseCSR checks a certificate request's signature and that it names
// exactly one SPIFFE ID and nothing else, and returns that ID.
func ParseCSR(der []byte) (*x509.CertificateRequest, ID, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, ID{}, fmt.Errorf("parsing CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, ID{}, fmt.Errorf("CSR signature: %w", err)
	}
	if _, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok {
		return nil, ID{}, errors.New("CSR key must be ECDSA P-256")
	}
	if len(csr.URIs) != 1 || len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses) > 0 {
		return nil, ID{}, errors.New("CSR must name exactly one SPIFFE ID and no other names")
	}
	id, err := ParseID(csr.URIs[0].String())
	if err != nil {
		return nil, ID{}, fmt.Errorf("CSR: %w", err)
	}
	return csr, id, nil
}

// Sign issues a leaf certificate for a checked CSR. The leaf never outlives
// the issuer.
func (ca *CA) Sign(csr *x509.CertificateRequest, id ID, lifetime time.Duration, now time.Time) (*x509.Certificate, error) {
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: id.ServiceAccount + "." + id.Namespace},
		URIs:        []*url.URL{id.URL()},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, csr.PublicKey, lifetime, now)
}

// issue signs tmpl for pub: a fresh serial, backdated for clock skew, and
// never valid beyond the CA itself.
func (ca *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey, lifetime time.Duration, now time.Time) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = sn
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(lifetime)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Verify checks a peer's chain (leaf first, then intermediates) against
// the trusted anchors at now, and returns the leaf's SPIFFE ID.
func Verify(chain []*x509.Certificate, anchors *x509.CertPool, now time.Time) (ID, error) {
	if len(chain) == 0 {
		return ID{}, errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: anchors, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return ID{}, fmt.Errorf("certificate of %s: %w", idOrSubject(leaf), err)
	}
	if len(leaf.URIs) != 1 {
		return ID{}, fmt.Errorf("certificate of %s names %d URIs, want one SPIFFE ID", leaf.Subject, len(leaf.URIs))
	}
	return ParseID(leaf.URIs[0].String())
}

func idOrSubject(c *x509.Certificate) string {
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	return c.Subject.String()
}

// EncodeCerts returns certificates as PEM.
func EncodeCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// EncodeKey returns an EC private key as PEM.
func EncodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// ParseCerts reads every certificate in PEM data.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// ParseKey reads an EC private key (SEC 1 or PKCS #8) from PEM data.
func ParseKey(data []byte) (*ecdsa.PrivateKey, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch block.Type {
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(block.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, err
			}
			ec, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, errors.New("private key is not ECDSA")
			}
			return ec, nil
		}
	}
}

// Pool makes a CertPool of anchors.
func Pool(anchors ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, a := range anchors {
		p.AddCert(a)
	}
	return p
}

// SignServer issues a TLS server certificate for DNS names (and IP
// addresses given as names), with a fresh key, for services that are not
// workloads (such as the admission webhook the API server calls).
func (ca *CA) SignServer(commonName string, names []string, lifetime time.Duration, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	cert, err := ca.issue(tmpl, key.Public(), lifetime, now)
	return cert, key, err
}
