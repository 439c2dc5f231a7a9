package identity

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/meshproj/mesh/pki"
)

// Client asks the identity service for certificates. It trusts the
// service only if it presents the identity service's SPIFFE ID under one of
// the trust anchors.
type Client struct {
	URL     string // https://host:port
	Anchors *x509.CertPool
	// TrustDomain names the expected server identity.
	TrustDomain string
	http        *http.Client
}

// NewClient makes a client for the identity service at addr (host:port).
func NewClient(addr string, anchors *x509.CertPool, trustDomain string) *Client {
	c := &Client{URL: "https://" + addr, Anchors: anchors, TrustDomain: trustDomain}
	c.http = &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: ControlPlaneTLS(anchors, trustDomain)},
	}
	return c
}

// ControlPlaneTLS is the client side of TLS to the control plane (the
// identity service, xDS): the server must present a chain to one of the
// anchors for the control plane's SPIFFE ID.
func ControlPlaneTLS(anchors *x509.CertPool, trustDomain string) *tls.Config {
	want := ServerID(trustDomain)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The name check is the SPIFFE ID below, not a DNS name.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			chain, err := parseRaw(raw)
			if err != nil {
				return err
			}
			id, err := pki.Verify(chain, anchors, time.Now())
			if err != nil {
				return fmt.Errorf("control plane: %w", err)
			}
			if id != want {
				return fmt.Errorf("control plane presented %s, want %s", id, want)
			}
			return nil
		},
	}
}

func parseRaw(raw [][]byte) ([]*x509.Certificate, error) {
	chain := make([]*x509.Certificate, 0, len(raw))
	for _, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		chain = append(chain, c)
	}
	return chain, nil
}

// RefusedError is the identity service saying no, with its reason.
type RefusedError struct {
	Status int
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("identity service refused (%d): %s", e.Status, e.Reason)
}

// Certify sends a CSR (DER) with a token and returns the certificate chain,
// leaf first.
func (c *Client) Certify(ctx context.Context, csr []byte, token string) ([]*x509.Certificate, error) {
	body, _ := json.Marshal(CertifyRequest{
		CSR:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		Token: token,
	})
	req, err := http.NewRequestWithContext(ctx, "POST", c.URL+"/v1/certify", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		json.Unmarshal(data, &e)
		if e.Error == "" {
			e.Error = resp.Status
		}
		return nil, &RefusedError{Status: resp.StatusCode, Reason: e.Error}
	}
	var out CertifyResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("identity service answer: %w", err)
	}
	chain, err := pki.ParseCerts([]byte(out.Certificate))
	if err != nil {
		return nil, fmt.Errorf("identity service answer: %w", err)
	}
	if _, err := pki.Verify(chain, c.Anchors, time.Now()); err != nil {
		return nil, fmt.Errorf("issued certificate does not verify against the trust anchors: %w", err)
	}
	return chain, nil
}

var errNoCert = errors.New("no certificate yet")
