package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshproj/mesh/kubeapi"
	"github.com/meshproj/mesh/pki"
)

// IssuerSecret is the Secret `mesh install` (or cert-manager) keeps the
// issuer in.
const IssuerSecret = "mesh-identity-issuer"

// IssuerFromSecret parses an issuer Secret (kubernetes.io/tls with ca.crt).
func IssuerFromSecret(s *kubeapi.Secret) (*pki.CA, error) {
	certs, err := pki.ParseCerts(s.Data["tls.crt"])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s tls.crt: %w", s.Metadata.Namespace, s.Metadata.Name, err)
	}
	key, err := pki.ParseKey(s.Data["tls.key"])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s tls.key: %w", s.Metadata.Namespace, s.Metadata.Name, err)
	}
	if !key.PublicKey.Equal(certs[0].PublicKey) {
		return nil, fmt.Errorf("secret %s/%s: tls.key does not match tls.crt", s.Metadata.Namespace, s.Metadata.Name)
	}
	chain := certs[1:]
	if anchors, err := pki.ParseCerts(s.Data["ca.crt"]); err == nil {
		chain = append(chain, anchors...)
	}
	return &pki.CA{Cert: certs[0], Key: key, Chain: chain}, nil
}

// WatchIssuer delivers the issuer from its Secret, first as soon as it is
// read and again whenever the Secret changes, until ctx ends: a rotated
// issuer takes effect without a restart.
func WatchIssuer(ctx context.Context, c *kubeapi.Client, namespace string, log *slog.Logger, set func(*pki.CA)) error {
	path := "/api/v1/namespaces/" + namespace + "/secrets"
	load := func(s *kubeapi.Secret) {
		ca, err := IssuerFromSecret(s)
		if err != nil {
			log.Error("issuer secret rejected; keeping the current issuer", slog.Any("error", err))
			return
		}
		set(ca)
		log.Info("issuer loaded", slog.String("subject", ca.Cert.Subject.CommonName), slog.Time("not_after", ca.Cert.NotAfter))
	}
	var s kubeapi.Secret
	if err := c.Do(ctx, "GET", path+"/"+IssuerSecret, nil, &s); err != nil {
		return fmt.Errorf("reading issuer secret %s/%s: %w", namespace, IssuerSecret, err)
	}
	load(&s)
	go func() {
		rv := s.Metadata.ResourceVersion
		for ctx.Err() == nil {
			q := "?fieldSelector=metadata.name%3D" + IssuerSecret + "&allowWatchBookmarks=true"
			if rv != "" {
				q += "&resourceVersion=" + rv
			}
			err := c.Watch(ctx, path+q, func(ev kubeapi.WatchEvent) {
				switch ev.Type {
				case "ADDED", "MODIFIED":
					var s kubeapi.Secret
					if json.Unmarshal(ev.Object, &s) == nil {
						rv = s.Metadata.ResourceVersion
						load(&s)
					}
				case "ERROR": // usually "resource version too old": start afresh
					rv = ""
				}
			})
			if err != nil && ctx.Err() == nil {
				log.Warn("watching the issuer secret", slog.Any("error", err))
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return nil
}
