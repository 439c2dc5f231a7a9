package check

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/pki"
	"github.com/meshproj/mesh/proxy/adminapi"
	"github.com/meshproj/mesh/proxy/discovery/file"
	"github.com/meshproj/mesh/stat"
)

// Categories of the local mesh's checks.
const (
	ControlPlane = "control-plane"
	DataPlane    = "data-plane"
)

// Local returns the checks for a local mesh; with proxyOnly, only the
// data plane's.
func Local(m *inventory.Mesh, proxyOnly bool) []Check {
	var checks []Check
	cp := m.ControlPlane
	if !proxyOnly {
		checks = append(checks,
			Check{
				Category: ControlPlane, Description: "identity service answers with its identity", Fatal: true,
				Hint: "start the local control plane again (mesh demo), or check --identity-addr and the trust anchors file",
				Run:  func(ctx context.Context) (Status, string) { return identityReachable(ctx, cp) },
			},
			Check{
				Category: ControlPlane, Description: "discovery file is valid",
				Hint: "fix the file at the line named above; proxies keep their last good state meanwhile",
				Run: func(context.Context) (Status, string) {
					if _, _, err := file.Load(cp.DiscoveryFile); err != nil {
						return Fail, err.Error()
					}
					return OK, ""
				},
			})
	}
	for _, w := range m.Workloads {
		for _, inst := range w.Instances {
			admin := inst.Admin
			name := w.Ref() + " (" + inst.Name + ")"
			checks = append(checks,
				Check{
					Category: DataPlane, Description: "proxy of " + name + " is live",
					Hint: "the proxy is not running or not answering on its admin port " + admin + "; restart it and look at its log",
					Run: func(ctx context.Context) (Status, string) {
						return httpOK(ctx, "http://"+admin+"/live")
					},
				},
				Check{
					Category: DataPlane, Description: "proxy of " + name + " is ready",
					Hint: "a proxy is ready once it has discovery and its certificate; its log says which is missing",
					Run: func(ctx context.Context) (Status, string) {
						return httpOK(ctx, "http://"+admin+"/ready")
					},
				},
				Check{
					Category: DataPlane, Description: "proxy of " + name + " has a valid certificate, not close to expiry",
					Hint: "the proxy renews at 70% of the lifetime; if it cannot, check that the identity service is up and the token file readable",
					Run: func(ctx context.Context) (Status, string) {
						return certificateFresh(ctx, admin, time.Now())
					},
				},
				Check{
					Category: DataPlane, Description: "proxy of " + name + " has the current discovery state",
					Hint: "the proxy refused the latest discovery file or does not see it (look for 'discovery file rejected' in its log), or on xDS cannot reach the controller (its /config_dump says why)",
					Run: func(ctx context.Context) (Status, string) {
						return discoveryFresh(ctx, admin, cp.DiscoveryFile)
					},
				},
			)
		}
	}
	return checks
}

func identityReachable(ctx context.Context, cp inventory.ControlPlane) (Status, string) {
	data, err := os.ReadFile(cp.TrustAnchors)
	if err != nil {
		return Fail, err.Error()
	}
	anchors, err := pki.ParseCerts(data)
	if err != nil {
		return Fail, fmt.Sprintf("trust anchors %s: %v", cp.TrustAnchors, err)
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}}
	c, err := d.DialContext(ctx, "tcp", cp.IdentityAddr)
	if err != nil {
		return Fail, fmt.Sprintf("connecting to %s: %v", cp.IdentityAddr, err)
	}
	defer c.Close()
	id, err := pki.Verify(c.(*tls.Conn).ConnectionState().PeerCertificates, pki.Pool(anchors...), time.Now())
	if err != nil {
		return Fail, err.Error()
	}
	if want := identity.ServerID(cp.TrustDomain); id != want {
		return Fail, fmt.Sprintf("%s presented %s, want %s", cp.IdentityAddr, id, want)
	}
	return OK, ""
}

func httpOK(ctx context.Context, url string) (Status, string) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return Fail, err.Error()
	}
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Do(req)
	if err != nil {
		return Fail, err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Fail, fmt.Sprintf("%s answered %s", url, resp.Status)
	}
	return OK, ""
}

func dump(ctx context.Context, admin string) (*adminapi.ConfigDump, error) {
	return stat.HTTPDump(ctx, admin)
}

// certificateFresh fails on no or an expired certificate and warns when
// less than a fifth of its lifetime is left (renewal should have happened).
func certificateFresh(ctx context.Context, admin string, now time.Time) (Status, string) {
	d, err := dump(ctx, admin)
	if err != nil {
		return Fail, err.Error()
	}
	if d.Identity == nil {
		return Warn, "the proxy has no identity: its traffic is not mTLS"
	}
	if d.Identity.NotAfter.IsZero() {
		return Fail, fmt.Sprintf("no certificate yet for %s (%d failed requests)", d.Identity.ID, d.Identity.Failures)
	}
	left := d.Identity.NotAfter.Sub(now)
	if left <= 0 {
		return Fail, fmt.Sprintf("certificate for %s expired at %s", d.Identity.ID, d.Identity.NotAfter.Format(time.RFC3339))
	}
	if life := d.Identity.NotAfter.Sub(d.Identity.NotBefore); life > 0 && left < life/5 {
		return Warn, fmt.Sprintf("certificate for %s expires in %s", d.Identity.ID, left.Round(time.Second))
	}
	return OK, ""
}

func discoveryFresh(ctx context.Context, admin, path string) (Status, string) {
	d, err := dump(ctx, admin)
	if err != nil {
		return Fail, err.Error()
	}
	// A proxy on xDS has no file to compare with: it must be connected.
	if b, ok := d.Discovery.Backend.(map[string]any); ok && b["controller"] != nil {
		if connected, _ := b["connected"].(bool); !connected {
			return Fail, fmt.Sprintf("proxy is not connected to the controller at %v (%v); it serves from its last state", b["controller"], b["lastError"])
		}
		return OK, ""
	}
	state, _, err := file.Load(path)
	if err != nil {
		return Warn, "cannot compare: " + err.Error()
	}
	if d.Discovery.Revision != state.Revision {
		return Fail, fmt.Sprintf("proxy has discovery revision %s from %s, the file is at %s", d.Discovery.Revision, d.Discovery.Updated.Format(time.RFC3339), state.Revision)
	}
	return OK, ""
}
