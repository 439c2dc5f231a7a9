package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshproj/mesh/pki"
)

// Agent keeps a proxy's certificate. Its private key is made in memory and
// never leaves the process.
type Agent struct {
	ID        pki.ID
	Client    *Client
	TokenFile string
	Log       *slog.Logger
	// RenewAt is the fraction of a certificate's lifetime after which it is
	// renewed (0.7 if zero); jitter of ±5% spreads renewals.
	RenewAt float64

	key   *ecdsa.PrivateKey
	cert  atomic.Pointer[tls.Certificate]
	ready chan struct{}
	// Renewals and failures, for metrics.
	Renewals, Failures atomic.Int64
}

// NewAgent makes the key; Run fetches certificates.
func NewAgent(id pki.ID, client *Client, tokenFile string, log *slog.Logger) (*Agent, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	return &Agent{ID: id, Client: client, TokenFile: tokenFile, Log: log, key: key, ready: make(chan struct{})}, nil
}

// Ready is closed once the first certificate is in hand.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Certificate returns the current certificate, or nil before the first.
func (a *Agent) Certificate() *tls.Certificate { return a.cert.Load() }

// GetCertificate and GetClientCertificate plug the agent into tls.Config.
func (a *Agent) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := a.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errNoCert
}

// GetClientCertificate is tls.Config.GetClientCertificate.
func (a *Agent) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return a.GetCertificate(nil)
}

// Expiry returns when the current certificate expires (zero before one).
func (a *Agent) Expiry() time.Time {
	if c := a.cert.Load(); c != nil {
		return c.Leaf.NotAfter
	}
	return time.Time{}
}

// Run gets a certificate, then renews it until ctx ends. While renewal
// fails the current certificate stays in use and the agent retries with
// backoff.
func (a *Agent) Run(ctx context.Context) error {
	renewAt := a.RenewAt
	if renewAt <= 0 || renewAt >= 1 {
		renewAt = 0.7
	}
	backoff := 100 * time.Millisecond
	for {
		err := a.renew(ctx)
		var wait time.Duration
		if err != nil {
			a.Failures.Add(1)
			a.Log.Warn("identity: certificate request failed; keeping the current certificate", slog.String("identity", a.ID.String()), slog.Any("error", err))
			wait = backoff
			backoff = min(2*backoff, 30*time.Second)
			if c := a.cert.Load(); c != nil {
				wait = min(wait, time.Until(c.Leaf.NotAfter)/2)
			}
		} else {
			backoff = 100 * time.Millisecond
			leaf := a.cert.Load().Leaf
			life := leaf.NotAfter.Sub(leaf.NotBefore)
			frac := renewAt + (rand.Float64()-0.5)*0.1
			wait = time.Until(leaf.NotBefore.Add(time.Duration(float64(life) * frac)))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(max(wait, 10*time.Millisecond)):
		}
	}
}

func (a *Agent) renew(ctx context.Context) error {
	token, err := os.ReadFile(a.TokenFile)
	if err != nil {
		return fmt.Errorf("reading token: %w", err)
	}
	csr, err := pki.NewCSR(a.key, a.ID)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	chain, err := a.Client.Certify(rctx, csr, strings.TrimSpace(string(token)))
	if err != nil {
		return err
	}
	if err := a.isOurs(chain[0]); err != nil {
		return err
	}
	raw := make([][]byte, len(chain))
	for i, c := range chain {
		raw[i] = c.Raw
	}
	a.cert.Store(&tls.Certificate{Certificate: raw, PrivateKey: a.key, Leaf: chain[0]})
	if a.Renewals.Add(1) == 1 {
		close(a.ready)
	}
	a.Log.Info("identity: certificate issued", slog.String("identity", a.ID.String()), slog.Time("not_after", chain[0].NotAfter))
	return nil
}

// isOurs checks that an issued certificate is for this agent's identity and
// key: a service that answered with another workload's certificate (a bug,
// or a lie) would otherwise have the proxy present an identity it cannot
// prove, or speak for the wrong workload.
func (a *Agent) isOurs(leaf *x509.Certificate) error {
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(a.key.Public()) {
		return errors.New("the identity service issued a certificate for another key")
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != a.ID.String() {
		return fmt.Errorf("the identity service issued a certificate for %v, not %s", leaf.URIs, a.ID)
	}
	return nil
}
