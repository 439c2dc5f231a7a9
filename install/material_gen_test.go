package install

import (
	"crypto/ecdsa"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/meshproj/mesh/pki"
)

var regenerate = flag.Bool("regenerate-material", false, "write new test identity material to testdata (then -update the goldens)")

// TestGenerateMaterial writes the identity material the golden tests use.
// It runs only when asked; the files are committed so that goldens stay put.
func TestGenerateMaterial(t *testing.T) {
	if !*regenerate {
		t.Skip("run with -regenerate-material to write new test material")
	}
	now := time.Now()
	root, _ := pki.NewRoot("test trust anchor", 20*365*24*time.Hour, now)
	issuer, _ := root.NewIssuer("test issuer", 20*365*24*time.Hour, now)
	other, _ := pki.NewRoot("unrelated root", 20*365*24*time.Hour, now)
	stranger, _ := other.NewIssuer("stranger issuer", 20*365*24*time.Hour, now)
	expired, _ := root.NewIssuer("expired issuer", time.Hour, now.Add(-48*time.Hour))
	whCA, _ := pki.NewRoot("test webhook CA", 20*365*24*time.Hour, now)
	whCert, whKey, _ := whCA.SignServer("mesh-webhook.mesh-system.svc", []string{"mesh-webhook.mesh-system.svc"}, 20*365*24*time.Hour, now)
	key := func(k any) []byte { b, _ := pki.EncodeKey(k.(*ecdsa.PrivateKey)); return b }
	files := map[string][]byte{
		"anchors.pem": pki.EncodeCerts(root.Cert), "issuer.crt": pki.EncodeCerts(issuer.Cert), "issuer.key": key(issuer.Key),
		"stranger.crt": pki.EncodeCerts(stranger.Cert), "stranger.key": key(stranger.Key),
		"expired.crt": pki.EncodeCerts(expired.Cert), "expired.key": key(expired.Key),
		"webhook-ca.pem": pki.EncodeCerts(whCA.Cert), "webhook.crt": pki.EncodeCerts(whCert), "webhook.key": key(whKey),
	}
	for name, data := range files {
		if err := os.WriteFile("testdata/"+name, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
