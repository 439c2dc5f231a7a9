package check

import (
	"os/exec"
	"strings"
	"testing"
)

// The hint names the release the controller is built with.
func TestTheGatewayAPIReleaseIsGoMods(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != gatewayAPIVersion {
		t.Errorf("go.mod has sigs.k8s.io/gateway-api %s; check.gatewayAPIVersion says %s", got, gatewayAPIVersion)
	}
}

func TestParseRelease(t *testing.T) {
	for in, want := range map[string][3]int{"v1.6.3": {1, 6, 3}, "v1.1.0-rc1": {1, 1, 0}, "1.2.3": {1, 2, 3}} {
		if got, ok := parseRelease(in); !ok || got != want {
			t.Errorf("parseRelease(%q) = %v %v", in, got, ok)
		}
	}
	for _, bad := range []string{"", "v1", "v1.x.0", "dev"} {
		if _, ok := parseRelease(bad); ok {
			t.Errorf("parseRelease(%q) accepted", bad)
		}
	}
	if !less([3]int{1, 0, 9}, minGatewayAPI) || less(minGatewayAPI, minGatewayAPI) {
		t.Error("less")
	}
}
