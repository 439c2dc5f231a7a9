package install

import (
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/meshproj/mesh/pki"
)

// Material is the identity and webhook TLS material an installation needs,
// all PEM.
type Material struct {
	TrustAnchors string
	IssuerCert   string // empty with an external issuer
	IssuerKey    string
	WebhookCA    string
	WebhookCert  string
	WebhookKey   string
}

// Files name given material; empty fields are generated.
type Files struct {
	TrustAnchors, IssuerCert, IssuerKey string
	WebhookCA, WebhookCert, WebhookKey  string
}

const anchorLifetime = 10 * 365 * 24 * time.Hour

// Prepare loads given files (validated) and generates what is missing.
func Prepare(v Values, f Files, now time.Time) (*Material, error) {
	m := &Material{}
	given := f.TrustAnchors != "" || f.IssuerCert != "" || f.IssuerKey != ""
	switch {
	case v.Identity.ExternalIssuer:
		if f.TrustAnchors == "" {
			return nil, fmt.Errorf("an external issuer needs --identity-trust-anchors-file: the anchors its issuer chains to")
		}
		anchors, err := readCerts(f.TrustAnchors, "trust anchors")
		if err != nil {
			return nil, err
		}
		if err := notExpired(f.TrustAnchors, anchors[0], now); err != nil {
			return nil, err
		}
		m.TrustAnchors = string(pki.EncodeCerts(anchors...))
	case given:
		if f.TrustAnchors == "" || f.IssuerCert == "" || f.IssuerKey == "" {
			return nil, fmt.Errorf("give all of --identity-trust-anchors-file, --identity-issuer-cert-file and --identity-issuer-key-file, or none")
		}
		if err := loadIdentity(m, f, now); err != nil {
			return nil, err
		}
	default:
		lifetime, _ := time.ParseDuration(v.Identity.IssuerLifetime)
		root, err := pki.NewRoot("mesh trust anchor", anchorLifetime, now)
		if err != nil {
			return nil, err
		}
		issuer, err := root.NewIssuer("mesh issuer", lifetime, now)
		if err != nil {
			return nil, err
		}
		key, err := pki.EncodeKey(issuer.Key.(*ecdsa.PrivateKey))
		if err != nil {
			return nil, err
		}
		m.TrustAnchors, m.IssuerCert, m.IssuerKey = string(pki.EncodeCerts(root.Cert)), string(pki.EncodeCerts(issuer.Cert)), string(key)
	}
	return m, webhookMaterial(m, v, f, now)
}

func readCerts(path, what string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s file: %w", what, err)
	}
	certs, err := pki.ParseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s file %s: %w", what, path, err)
	}
	return certs, nil
}

func notExpired(path string, c *x509.Certificate, now time.Time) error {
	if now.After(c.NotAfter) {
		return fmt.Errorf("%s: certificate %q expired at %s", path, c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("%s: certificate %q is not valid before %s", path, c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// loadIdentity reads and checks given identity files: each parses, the
// issuer is a CA that chains to an anchor, nothing is expired, and the key
// matches the issuer certificate.
func loadIdentity(m *Material, f Files, now time.Time) error {
	anchors, err := readCerts(f.TrustAnchors, "trust anchors")
	if err != nil {
		return err
	}
	for _, a := range anchors {
		if err := notExpired(f.TrustAnchors, a, now); err != nil {
			return err
		}
	}
	certs, err := readCerts(f.IssuerCert, "issuer certificate")
	if err != nil {
		return err
	}
	issuer := certs[0]
	if !issuer.IsCA {
		return fmt.Errorf("%s: certificate %q is not a CA certificate; the issuer must be able to sign", f.IssuerCert, issuer.Subject.CommonName)
	}
	if err := notExpired(f.IssuerCert, issuer, now); err != nil {
		return err
	}
	if _, err := issuer.Verify(x509.VerifyOptions{Roots: pki.Pool(anchors...), Intermediates: pki.Pool(certs[1:]...), CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("%s: issuer %q does not chain to any trust anchor in %s: %v", f.IssuerCert, issuer.Subject.CommonName, f.TrustAnchors, err)
	}
	keyPEM, err := os.ReadFile(f.IssuerKey)
	if err != nil {
		return fmt.Errorf("issuer key file: %w", err)
	}
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		return fmt.Errorf("issuer key file %s: %w", f.IssuerKey, err)
	}
	if !key.PublicKey.Equal(issuer.PublicKey) {
		return fmt.Errorf("%s: the key does not match the issuer certificate in %s", f.IssuerKey, f.IssuerCert)
	}
	encoded, err := pki.EncodeKey(key)
	if err != nil {
		return err
	}
	m.TrustAnchors, m.IssuerCert, m.IssuerKey = string(pki.EncodeCerts(anchors...)), string(pki.EncodeCerts(certs...)), string(encoded)
	return nil
}

// webhookMaterial is the webhook's serving certificate and the CA the API
// server trusts it by (the caBundle).
func webhookMaterial(m *Material, v Values, f Files, now time.Time) error {
	if f.WebhookCA != "" || f.WebhookCert != "" || f.WebhookKey != "" {
		read := func(p string) (string, error) {
			b, err := os.ReadFile(p)
			return string(b), err
		}
		var err error
		if m.WebhookCA, err = read(f.WebhookCA); err != nil {
			return fmt.Errorf("webhook CA file: %w", err)
		}
		if m.WebhookCert, err = read(f.WebhookCert); err != nil {
			return fmt.Errorf("webhook certificate file: %w", err)
		}
		if m.WebhookKey, err = read(f.WebhookKey); err != nil {
			return fmt.Errorf("webhook key file: %w", err)
		}
		return nil
	}
	ca, err := pki.NewRoot("mesh webhook CA", anchorLifetime, now)
	if err != nil {
		return err
	}
	host := "mesh-webhook." + v.Namespace + ".svc"
	leaf, key, err := ca.SignServer(host, []string{host, host + ".cluster.local"}, anchorLifetime, now)
	if err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return err
	}
	m.WebhookCA, m.WebhookCert, m.WebhookKey = string(pki.EncodeCerts(ca.Cert)), string(pki.EncodeCerts(leaf)), string(keyPEM)
	return nil
}
