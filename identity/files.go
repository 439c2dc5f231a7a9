package identity

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshproj/mesh/pki"
)

// Files of a local identity directory.
const (
	AnchorsFile   = "trust-anchors.pem"
	IssuerCert    = "issuer.crt"
	IssuerKey     = "issuer.key"
	TokenKeyFile  = "token.key"
	anchorLife    = 10 * 365 * 24 * time.Hour
	issuerLife    = 365 * 24 * time.Hour
	tokenKeyBytes = 32
)

// InitDir makes a trust anchor, an issuer and a token key in dir. It
// refuses to overwrite any of them. The trust anchor's key is not kept:
// nothing in local mode needs it after the issuer is signed.
func InitDir(dir string) error {
	for _, f := range []string{AnchorsFile, IssuerCert, IssuerKey, TokenKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("%s already exists; remove the directory's identity files to start over", filepath.Join(dir, f))
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	now := time.Now()
	root, err := pki.NewRoot("mesh trust anchor", anchorLife, now)
	if err != nil {
		return err
	}
	issuer, err := root.NewIssuer("mesh issuer", issuerLife, now)
	if err != nil {
		return err
	}
	key, err := pki.EncodeKey(issuer.Key.(*ecdsa.PrivateKey))
	if err != nil {
		return err
	}
	secret := make([]byte, tokenKeyBytes)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{AnchorsFile, pki.EncodeCerts(root.Cert), 0o644},
		{IssuerCert, pki.EncodeCerts(issuer.Cert), 0o644},
		{IssuerKey, key, 0o600},
		{TokenKeyFile, []byte(hex.EncodeToString(secret) + "\n"), 0o600},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// Dir is a loaded local identity directory.
type Dir struct {
	Issuer  *pki.CA
	Anchors []*x509.Certificate
	Tokens  *LocalTokens
}

// LoadDir reads what InitDir wrote, checking that the issuer chains to an
// anchor and that its key matches.
func LoadDir(dir string) (*Dir, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("identity directory: %w (run 'mesh identity init --dir %s' first)", err, dir)
		}
		return b, nil
	}
	anchorsPEM, err := read(AnchorsFile)
	if err != nil {
		return nil, err
	}
	anchors, err := pki.ParseCerts(anchorsPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, AnchorsFile), err)
	}
	certPEM, err := read(IssuerCert)
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, IssuerCert), err)
	}
	keyPEM, err := read(IssuerKey)
	if err != nil {
		return nil, err
	}
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, IssuerKey), err)
	}
	if !key.PublicKey.Equal(certs[0].PublicKey) {
		return nil, fmt.Errorf("%s does not match the certificate in %s", filepath.Join(dir, IssuerKey), filepath.Join(dir, IssuerCert))
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pki.Pool(anchors...), Intermediates: pki.Pool(certs[1:]...), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%s does not chain to %s: %w", filepath.Join(dir, IssuerCert), filepath.Join(dir, AnchorsFile), err)
	}
	secretHex, err := read(TokenKeyFile)
	if err != nil {
		return nil, err
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(secretHex)))
	if err != nil {
		return nil, fmt.Errorf("%s: not hex", filepath.Join(dir, TokenKeyFile))
	}
	tokens, err := NewLocalTokens(secret)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, TokenKeyFile), err)
	}
	chain := append(certs[1:], anchors[0])
	return &Dir{Issuer: &pki.CA{Cert: certs[0], Key: key, Chain: chain}, Anchors: anchors, Tokens: tokens}, nil
}
