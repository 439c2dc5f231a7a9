package controller

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/pki"
)

func TestMixedTLSListenerServesBothAndTheControlPlaneIdentity(t *testing.T) {
	root, _ := pki.NewRoot("anchor", time.Hour, time.Now())
	issuer, _ := root.NewIssuer("issuer", time.Hour, time.Now())
	srv := &identity.Server{TrustDomain: "cluster.local"}
	srv.SetIssuer(issuer)
	cfg, err := srv.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	healthpb.RegisterHealthServer(g, health.NewServer())
	go g.Serve(MixedTLSListener(ln, cfg))
	defer g.Stop()

	call := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := call(insecure.NewCredentials()); err != nil {
		t.Errorf("plaintext: %v", err)
	}
	if err := call(credentials.NewTLS(identity.ControlPlaneTLS(pki.Pool(root.Cert), "cluster.local"))); err != nil {
		t.Errorf("TLS with the right anchors: %v", err)
	}
	other, _ := pki.NewRoot("another anchor", time.Hour, time.Now())
	if err := call(credentials.NewTLS(identity.ControlPlaneTLS(pki.Pool(other.Cert), "cluster.local"))); err == nil {
		t.Error("TLS with other anchors succeeded")
	}
	if err := call(credentials.NewTLS(identity.ControlPlaneTLS(pki.Pool(root.Cert), "other.domain"))); err == nil || !strings.Contains(err.Error(), "control plane presented") {
		t.Errorf("TLS expecting another trust domain: %v", err)
	}
}
