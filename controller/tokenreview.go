// Package controller is the control plane behind `mesh-controller`: the
// identity service with Kubernetes ServiceAccount tokens, the injection
// webhook, and (next) discovery over xDS. Each part is a small type here;
// the command wires them to the API server.
package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/kubeapi"
)

// TokenReviewer checks ServiceAccount tokens with the API server's
// TokenReview API. It is an identity.TokenValidator.
type TokenReviewer struct {
	Client   *kubeapi.Client
	Audience string
}

var _ identity.TokenValidator = (*TokenReviewer)(nil)

// Validate asks the API server who the token belongs to.
func (r *TokenReviewer) Validate(ctx context.Context, token string) (identity.Workload, error) {
	review := kubeapi.TokenReview{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview", Spec: kubeapi.TokenReviewSpec{Token: token}}
	if r.Audience != "" {
		review.Spec.Audiences = []string{r.Audience}
	}
	var res kubeapi.TokenReview
	if err := r.Client.Do(ctx, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", review, &res); err != nil {
		return identity.Workload{}, fmt.Errorf("TokenReview: %w", err)
	}
	if !res.Status.Authenticated {
		reason := res.Status.Error
		if reason == "" {
			reason = "not authenticated"
		}
		return identity.Workload{}, fmt.Errorf("the API server refused the token: %s", reason)
	}
	if r.Audience != "" && !slices.Contains(res.Status.Audiences, r.Audience) {
		return identity.Workload{}, fmt.Errorf("token is not for audience %s", r.Audience)
	}
	// system:serviceaccount:NAMESPACE:NAME
	parts := strings.Split(res.Status.User.Username, ":")
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" {
		return identity.Workload{}, fmt.Errorf("token belongs to %q, not a ServiceAccount", res.Status.User.Username)
	}
	return identity.Workload{Namespace: parts[2], ServiceAccount: parts[3]}, nil
}
