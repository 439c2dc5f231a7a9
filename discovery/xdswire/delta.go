package xdswire

import (
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"
)

// The incremental ("delta") variant of the protocol: the proxy names the
// resources it starts and stops wanting, and the controller sends only
// the ones that changed and the names of the ones that went. A change to
// one service's endpoints is then one resource on the wire, however many
// the proxy holds.

// DeltaRequest is a DeltaDiscoveryRequest: the names a proxy starts and
// stops wanting of one type, or the acknowledgement (nonce) or refusal
// (error) of a response. The first request of a type on a stream names
// what the proxy already holds (Initial, name to version), so a controller
// that has the same versions sends them no more.
type DeltaRequest struct {
	TypeURL                    string
	Subscribe, Unsubscribe     []string
	Initial                    map[string]string
	Nonce                      string
	NodeID, NodeCluster, Agent string
	ErrorCode                  int32
	ErrorMessage               string
}

// Marshal encodes the request (envoy.service.discovery.v3.DeltaDiscoveryRequest).
func (r *DeltaRequest) Marshal() []byte {
	var b []byte
	if node := marshalNode(r.NodeID, r.NodeCluster, r.Agent); len(node) > 0 {
		b = appendBytes(b, 1, node)
	}
	b = appendString(b, 2, r.TypeURL)
	for _, n := range r.Subscribe {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, n)
	}
	for _, n := range r.Unsubscribe {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendString(b, n)
	}
	for _, name := range slices.Sorted(maps.Keys(r.Initial)) {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, name)
		e = appendString(e, 2, r.Initial[name])
		b = appendBytes(b, 5, e)
	}
	b = appendString(b, 6, r.Nonce)
	if st := marshalStatus(r.ErrorCode, r.ErrorMessage); st != nil {
		b = appendBytes(b, 7, st)
	}
	return b
}

// DeltaResource is one resource of a delta response, still encoded.
type DeltaResource struct {
	Name, Version string
	Value         []byte
}

// DeltaResponse is a DeltaDiscoveryResponse: the resources of one type
// that changed, and the names of those that went.
type DeltaResponse struct {
	TypeURL, Nonce, SystemVersion string
	Resources                     []DeltaResource
	Removed                       []string
}

// ParseDeltaResponse decodes a DeltaDiscoveryResponse. Every resource
// must be of the response's type and named, and no name may come twice.
func ParseDeltaResponse(b []byte) (*DeltaResponse, error) {
	r := &DeltaResponse{}
	var urls []string
	err := walk(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&r.SystemVersion)
		case 2:
			var res DeltaResource
			var url string
			err := f.message("resources", func(g field) error {
				switch g.num {
				case 1:
					return g.str(&res.Version)
				case 2:
					return g.message("resource", func(h field) error {
						switch h.num {
						case 1:
							return h.str(&url)
						case 2:
							if h.typ != protowire.BytesType {
								return h.wrongType("value")
							}
							res.Value = h.bytes
						}
						return nil
					})
				case 3:
					return g.str(&res.Name)
				}
				return nil
			})
			r.Resources = append(r.Resources, res)
			urls = append(urls, url)
			return err
		case 4:
			return f.str(&r.TypeURL)
		case 5:
			return f.str(&r.Nonce)
		case 6:
			var name string
			if err := f.str(&name); err != nil {
				return err
			}
			r.Removed = append(r.Removed, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("delta discovery response: %w", err)
	}
	seen := make(map[string]bool, len(r.Resources)+len(r.Removed))
	for i, res := range r.Resources {
		if urls[i] != r.TypeURL {
			return nil, fmt.Errorf("delta discovery response of %s holds a %q", r.TypeURL, urls[i])
		}
		if res.Name == "" {
			return nil, fmt.Errorf("delta discovery response of %s holds a resource without a name", r.TypeURL)
		}
		if seen[res.Name] {
			return nil, fmt.Errorf("delta discovery response of %s names %s twice", r.TypeURL, res.Name)
		}
		seen[res.Name] = true
	}
	for _, name := range r.Removed {
		if seen[name] {
			return nil, fmt.Errorf("delta discovery response of %s both sends and removes %s", r.TypeURL, name)
		}
		seen[name] = true
	}
	return r, nil
}

func marshalNode(id, cluster, agent string) []byte {
	var node []byte
	node = appendString(node, 1, id)
	node = appendString(node, 2, cluster)
	return appendString(node, 6, agent)
}

// marshalStatus encodes a google.rpc.Status, or nothing for no error.
func marshalStatus(code int32, msg string) []byte {
	if code == 0 && msg == "" {
		return nil
	}
	var st []byte
	if code != 0 {
		st = protowire.AppendTag(st, 1, protowire.VarintType)
		st = protowire.AppendVarint(st, uint64(int64(code)))
	}
	return appendString(st, 2, msg)
}
