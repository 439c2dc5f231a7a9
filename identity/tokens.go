// Package identity issues and keeps workload certificates. The server side
// checks a certificate request against a workload token and signs it with
// the issuer; the agent side (in each proxy) makes a private key in memory,
// asks for a certificate before the proxy is ready and renews it.
//
// Token checking is behind TokenValidator: LocalTokens for local mode and
// `mesh demo`; Kubernetes TokenReview comes with the controller.
package identity

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Workload is who a token speaks for.
type Workload struct {
	Namespace      string `json:"ns"`
	ServiceAccount string `json:"sa"`
}

// TokenValidator turns a bearer token into the workload it belongs to.
type TokenValidator interface {
	Validate(ctx context.Context, token string) (Workload, error)
}

// LocalTokens are tokens issued by the local control plane: a JSON claim
// and its HMAC-SHA256 under a key only the control plane holds.
type LocalTokens struct {
	key []byte
	now func() time.Time
}

// NewLocalTokens uses key (at least 32 bytes) to issue and check tokens.
func NewLocalTokens(key []byte) (*LocalTokens, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("token key must be at least 32 bytes, got %d", len(key))
	}
	return &LocalTokens{key: key, now: time.Now}, nil
}

type claims struct {
	Workload
	Expires int64 `json:"exp"`
}

// Issue makes a token for w that is valid for ttl.
func (l *LocalTokens) Issue(w Workload, ttl time.Duration) string {
	body, _ := json.Marshal(claims{Workload: w, Expires: l.now().Add(ttl).Unix()})
	payload := base64.RawURLEncoding.EncodeToString(body)
	return payload + "." + base64.RawURLEncoding.EncodeToString(l.sign(payload))
}

func (l *LocalTokens) sign(payload string) []byte {
	m := hmac.New(sha256.New, l.key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// Validate implements TokenValidator.
func (l *LocalTokens) Validate(_ context.Context, token string) (Workload, error) {
	payload, sig, ok := strings.Cut(strings.TrimSpace(token), ".")
	if !ok {
		return Workload{}, errors.New("token is malformed")
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, l.sign(payload)) {
		return Workload{}, errors.New("token signature is not valid")
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return Workload{}, errors.New("token is malformed")
	}
	var c claims
	if err := json.Unmarshal(body, &c); err != nil || c.Namespace == "" || c.ServiceAccount == "" {
		return Workload{}, errors.New("token names no workload")
	}
	if l.now().Unix() >= c.Expires {
		return Workload{}, fmt.Errorf("token expired at %s", time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	}
	return c.Workload, nil
}
