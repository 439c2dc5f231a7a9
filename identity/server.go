package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/meshproj/mesh/internal/httpserve"
	"github.com/meshproj/mesh/pki"
)

// DefaultLifetime is how long workload certificates live.
const DefaultLifetime = 24 * time.Hour

// CertifyRequest is the body of POST /v1/certify.
type CertifyRequest struct {
	// CSR is a PEM certificate request naming the workload's SPIFFE ID.
	CSR string `json:"csr"`
	// Token proves which workload is asking.
	Token string `json:"token"`
}

// CertifyResponse carries the issued certificate.
type CertifyResponse struct {
	// Certificate is the PEM leaf followed by the issuer chain.
	Certificate string    `json:"certificate"`
	NotAfter    time.Time `json:"notAfter"`
}

// ErrorResponse explains a refusal.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Server signs workload certificates.
type Server struct {
	TrustDomain string
	Validator   TokenValidator
	Lifetime    time.Duration
	Log         *slog.Logger

	issuer atomic.Pointer[pki.CA]
	// Counts by outcome, for metrics and tests.
	Issued, Refused atomic.Int64
}

// ServerID is the identity the identity service itself presents.
func ServerID(trustDomain string) pki.ID {
	return pki.ID{TrustDomain: trustDomain, Namespace: "mesh-system", ServiceAccount: "mesh-identity"}
}

// SetIssuer installs (or replaces) the signing CA.
func (s *Server) SetIssuer(ca *pki.CA) { s.issuer.Store(ca) }

// TLSConfig returns the server's TLS configuration: a certificate for
// ServerID signed by the issuer, renewed as the issuer changes.
func (s *Server) TLSConfig() (*tls.Config, error) {
	if s.issuer.Load() == nil {
		return nil, fmt.Errorf("identity server has no issuer")
	}
	var cached atomic.Pointer[tls.Certificate]
	var cachedFor atomic.Pointer[pki.CA]
	get := func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		ca := s.issuer.Load()
		if c := cached.Load(); c != nil && cachedFor.Load() == ca && time.Until(c.Leaf.NotAfter) > time.Hour {
			return c, nil
		}
		key, err := pki.NewKey()
		if err != nil {
			return nil, err
		}
		csrDER, err := pki.NewCSR(key, ServerID(s.TrustDomain))
		if err != nil {
			return nil, err
		}
		csr, id, err := pki.ParseCSR(csrDER)
		if err != nil {
			return nil, err
		}
		leaf, err := ca.Sign(csr, id, DefaultLifetime, time.Now())
		if err != nil {
			return nil, err
		}
		c := &tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}
		cached.Store(c)
		cachedFor.Store(ca)
		return c, nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: get}, nil
}

// Handler serves the identity API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/certify", s.certify)
	return mux
}

func (s *Server) certify(w http.ResponseWriter, r *http.Request) {
	var req CertifyRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		s.refuse(w, http.StatusBadRequest, "request body is not a certify request: "+err.Error(), "")
		return
	}
	block, _ := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		s.refuse(w, http.StatusBadRequest, "csr is not a PEM CERTIFICATE REQUEST", "")
		return
	}
	csr, id, err := pki.ParseCSR(block.Bytes)
	if err != nil {
		s.refuse(w, http.StatusBadRequest, err.Error(), "")
		return
	}
	wl, err := s.Validator.Validate(r.Context(), req.Token)
	if err != nil {
		s.refuse(w, http.StatusUnauthorized, "token refused: "+err.Error(), id.String())
		return
	}
	want := pki.ID{TrustDomain: s.TrustDomain, Namespace: wl.Namespace, ServiceAccount: wl.ServiceAccount}
	if id != want {
		s.refuse(w, http.StatusForbidden, fmt.Sprintf("CSR asks for %s but the token is for %s", id, want), id.String())
		return
	}
	ca := s.issuer.Load()
	lifetime := s.Lifetime
	if lifetime <= 0 {
		lifetime = DefaultLifetime
	}
	leaf, err := ca.Sign(csr, id, lifetime, time.Now())
	if err != nil {
		s.refuse(w, http.StatusInternalServerError, "signing: "+err.Error(), id.String())
		return
	}
	s.Issued.Add(1)
	s.log().Info("certificate issued", slog.String("identity", id.String()), slog.Time("not_after", leaf.NotAfter))
	chain := append([]*x509.Certificate{leaf, ca.Cert}, ca.Chain[:max(0, len(ca.Chain)-1)]...)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(CertifyResponse{Certificate: string(pki.EncodeCerts(chain...)), NotAfter: leaf.NotAfter})
}

func (s *Server) refuse(w http.ResponseWriter, status int, msg, id string) {
	s.Refused.Add(1)
	s.log().Warn("certificate refused", slog.String("identity", id), slog.String("reason", msg))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(ErrorResponse{Error: msg})
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// Serve answers certificate requests over HTTPS on ln until ctx ends, then
// lets requests in flight finish. The server needs its issuer first.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	cfg, err := s.TLSConfig()
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: s.Handler(), TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second}
	return httpserve.Run(ctx, "identity", hs, ln)
}
