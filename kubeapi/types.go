package kubeapi

import (
	"encoding/json"
	"time"
)

// ObjectMeta is the part of metadata the control plane reads.
type ObjectMeta struct {
	Name            string            `json:"name,omitempty"`
	Namespace       string            `json:"namespace,omitempty"`
	ResourceVersion string            `json:"resourceVersion,omitempty"`
	Generation      int64             `json:"generation,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	Annotations     map[string]string `json:"annotations,omitempty"`
	// CreationTimestamp orders objects where the older one wins.
	CreationTimestamp time.Time `json:"creationTimestamp,omitzero"`
}

// Key is namespace/name, how caches index objects.
func (m *ObjectMeta) Key() string { return m.Namespace + "/" + m.Name }

// Service is the part of a core/v1 Service discovery reads.
type Service struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     struct {
		Type       string        `json:"type,omitempty"`
		ClusterIP  string        `json:"clusterIP,omitempty"`
		ClusterIPs []string      `json:"clusterIPs,omitempty"`
		Ports      []ServicePort `json:"ports,omitempty"`
	} `json:"spec"`
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name        string `json:"name,omitempty"`
	Protocol    string `json:"protocol,omitempty"`
	Port        int32  `json:"port"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

// EndpointSlice is a discovery.k8s.io/v1 EndpointSlice.
type EndpointSlice struct {
	Metadata    ObjectMeta              `json:"metadata"`
	AddressType string                  `json:"addressType"`
	Ports       []EndpointPort          `json:"ports,omitempty"`
	Endpoints   []EndpointSliceEndpoint `json:"endpoints,omitempty"`
}

// ServiceNameLabel names the Service an EndpointSlice belongs to.
const ServiceNameLabel = "kubernetes.io/service-name"

// EndpointPort is a port of every endpoint in a slice.
type EndpointPort struct {
	Name     *string `json:"name,omitempty"`
	Port     *int32  `json:"port,omitempty"`
	Protocol *string `json:"protocol,omitempty"`
}

// EndpointSliceEndpoint is one backend of a slice.
type EndpointSliceEndpoint struct {
	Addresses  []string `json:"addresses"`
	Conditions struct {
		Ready       *bool `json:"ready,omitempty"`
		Serving     *bool `json:"serving,omitempty"`
		Terminating *bool `json:"terminating,omitempty"`
	} `json:"conditions"`
	TargetRef *ObjectReference `json:"targetRef,omitempty"`
	Zone      *string          `json:"zone,omitempty"`
}

// ObjectReference points at another object.
type ObjectReference struct {
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
}

// Pod is the part of a core/v1 Pod discovery reads.
type Pod struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     struct {
		ServiceAccountName string `json:"serviceAccountName,omitempty"`
	} `json:"spec"`
}

// ConfigMap is a core/v1 ConfigMap's metadata and string data.
type ConfigMap struct {
	Metadata ObjectMeta        `json:"metadata"`
	Data     map[string]string `json:"data"`
}

// Secret is a core/v1 Secret; Data values are decoded from base64.
type Secret struct {
	Metadata ObjectMeta        `json:"metadata"`
	Type     string            `json:"type,omitempty"`
	Data     map[string][]byte `json:"data"`
}

// TokenReview is an authentication.k8s.io/v1 TokenReview.
type TokenReview struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Spec       TokenReviewSpec   `json:"spec"`
	Status     TokenReviewStatus `json:"status,omitempty"`
}

// TokenReviewSpec is what is asked.
type TokenReviewSpec struct {
	Token     string   `json:"token"`
	Audiences []string `json:"audiences,omitempty"`
}

// TokenReviewStatus is the API server's answer.
type TokenReviewStatus struct {
	Authenticated bool     `json:"authenticated"`
	User          UserInfo `json:"user"`
	Audiences     []string `json:"audiences,omitempty"`
	Error         string   `json:"error,omitempty"`
}

// UserInfo names an authenticated user.
type UserInfo struct {
	Username string `json:"username"`
	UID      string `json:"uid,omitempty"`
}

// AdmissionReview is an admission.k8s.io/v1 AdmissionReview.
type AdmissionReview struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Request    *AdmissionRequest  `json:"request,omitempty"`
	Response   *AdmissionResponse `json:"response,omitempty"`
}

// AdmissionRequest is the object under admission.
type AdmissionRequest struct {
	UID       string          `json:"uid"`
	Namespace string          `json:"namespace,omitempty"`
	Operation string          `json:"operation,omitempty"`
	Object    json.RawMessage `json:"object,omitempty"`
}

// AdmissionResponse allows (and patches) or refuses.
type AdmissionResponse struct {
	UID       string   `json:"uid"`
	Allowed   bool     `json:"allowed"`
	Patch     []byte   `json:"patch,omitempty"`
	PatchType *string  `json:"patchType,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
	// Result says why a request is refused.
	Result *Status `json:"status,omitempty"`
}

// Status is the reason of a refused admission, as kubectl prints it.
type Status struct {
	Code    int    `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// Namespace is the part of a namespace the webhook reads: its annotations.
type Namespace struct {
	Metadata ObjectMeta `json:"metadata"`
}
