package check

import (
	"strings"
	"testing"
	"time"

	"github.com/meshproj/mesh/inventory/kube"
	"github.com/meshproj/mesh/pki"
)

func TestTheKubernetesVersionIsReadAsProvidersWriteIt(t *testing.T) {
	for _, c := range []struct {
		info         kube.ServerInfo
		major, minor int
		ok           bool
	}{
		{kube.ServerInfo{Major: "1", Minor: "37", GitVersion: "v1.37.2"}, 1, 37, true},
		{kube.ServerInfo{Major: "1", Minor: "30+", GitVersion: "v1.30.4-eks-a737599"}, 1, 30, true},
		{kube.ServerInfo{GitVersion: "v1.28.3-gke.1"}, 1, 28, true},
		{kube.ServerInfo{GitVersion: "weird"}, 0, 0, false},
	} {
		major, minor, ok := kubeVersion(&c.info)
		if major != c.major || minor != c.minor || ok != c.ok {
			t.Errorf("%+v: %d.%d %v; want %d.%d %v", c.info, major, minor, ok, c.major, c.minor, c.ok)
		}
	}
}

func TestACACertificateIsJudgedByWhatIsLeftOfItsLife(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	root, err := pki.NewRoot("anchor", 365*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at   time.Time
		want Status
		says string
	}{
		{now.Add(24 * time.Hour), OK, ""},
		{now.Add(300 * 24 * time.Hour), Warn, `trust anchor "anchor" expires in 65 days`},
		{now.Add(364*24*time.Hour + 12*time.Hour), Warn, "expires in 12h0m0s"},
		{now.Add(400 * 24 * time.Hour), Fail, `trust anchor "anchor" expired on 2027-12-01`},
		{now.Add(-time.Hour), Fail, "is not valid before"},
	} {
		st, detail := freshness("trust anchor", root.Cert, c.at)
		if st != c.want || !strings.Contains(detail, c.says) {
			t.Errorf("at %s: %s %q; want %s saying %q", c.at, st, detail, c.want, c.says)
		}
	}
}

func TestACRDIsCurrentWhenEveryVersionIsServedWithTheSameSchema(t *testing.T) {
	mk := func(versions ...crdVersion) *crd {
		c := &crd{}
		c.Spec.Versions = versions
		return c
	}
	schema := map[string]any{"openAPIV3Schema": map[string]any{"type": "object"}}
	other := map[string]any{"openAPIV3Schema": map[string]any{"type": "string"}}
	want := mk(crdVersion{Name: "v1alpha1", Served: true, Schema: schema})
	for _, c := range []struct {
		got  *crd
		says string
	}{
		{mk(crdVersion{Name: "v1alpha1", Served: true, Schema: schema}), ""},
		{mk(crdVersion{Name: "v1alpha1", Served: true, Schema: schema}, crdVersion{Name: "v1", Served: true}), ""},
		{mk(crdVersion{Name: "v1", Served: true, Schema: schema}), "version v1alpha1 is missing"},
		{mk(crdVersion{Name: "v1alpha1", Served: false, Schema: schema}), "version v1alpha1 is not served"},
		{mk(crdVersion{Name: "v1alpha1", Served: true, Schema: other}), "version v1alpha1 has another schema"},
	} {
		if got := crdDiffers(want, c.got); got != c.says {
			t.Errorf("%+v: %q; want %q", c.got.Spec.Versions, got, c.says)
		}
	}
}

func TestTheWorstOutcomeWinsAndEveryProblemIsNamed(t *testing.T) {
	st, detail := worst([]string{"a", "b", "c"}, func(s string) (Status, string) {
		switch s {
		case "b":
			return Warn, "b is old"
		case "c":
			return Fail, "c is down"
		}
		return OK, ""
	})
	if st != Fail || detail != "b is old\nc is down" {
		t.Errorf("worst: %s %q", st, detail)
	}
	if st, _ := worst([]string{"a"}, func(string) (Status, string) { return OK, "" }); st != OK {
		t.Errorf("all OK: %s", st)
	}
}
