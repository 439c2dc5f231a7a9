package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const trustDomain = "cluster.local"

func spiffe(sa string) string { return "spiffe://" + trustDomain + "/ns/default/sa/" + sa }

// meshIdentity is a running `mesh identity serve` and its directory.
type meshIdentity struct {
	dir, addr string
	// anchors is the trust anchors file proxies are given.
	anchors string
}

// runMesh runs a short mesh command and returns its output.
func runMesh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(meshBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mesh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// startIdentity creates identity material in a new directory and serves it.
func startIdentity(t *testing.T, certLifetime string) *meshIdentity {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "identity")
	runMesh(t, "identity", "init", "--dir", dir)
	return serveIdentity(t, dir, certLifetime)
}

func serveIdentity(t *testing.T, dir, certLifetime string) *meshIdentity {
	t.Helper()
	mi := &meshIdentity{dir: dir, addr: freeAddr(t), anchors: filepath.Join(dir, "trust-anchors.pem")}
	p := startMesh(t, "identity", "serve", "--dir", dir, "--addr", mi.addr, "--cert-lifetime", certLifetime)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", mi.addr)
		if err == nil {
			c.Close()
			return mi
		}
		select {
		case <-p.exited:
			t.Fatalf("identity service exited: %s", p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("identity service not listening: %s", p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proxyArgs returns the flags that give a proxy the identity of sa.
func (mi *meshIdentity) proxyArgs(t *testing.T, sa string) []string {
	t.Helper()
	token := filepath.Join(t.TempDir(), sa+".token")
	out := runMesh(t, "identity", "token", "--dir", mi.dir, "--namespace", "default", "--service-account", sa)
	if err := os.WriteFile(token, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--identity", spiffe(sa), "--identity-addr", mi.addr,
		"--identity-trust-anchors", mi.anchors, "--identity-token-file", token}
}

// meshedService renders a discovery service whose endpoints are meshed
// with the given identity.
func meshedService(name string, port int, extra, identity string, addrs ...string) string {
	s := service(name, port, "", extra, addrs...)
	return strings.ReplaceAll(s, "\n      - address: ", "\n      - identity: "+identity+"\n        address: ")
}

// relay forwards TCP connections to target and keeps what clients sent.
type relay struct {
	addr  string
	mu    syncBuffer
	conns chan struct{}
}

func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r := &relay{addr: ln.Addr().String(), conns: make(chan struct{}, 10000)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.conns <- struct{}{}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				go func() {
					buf := make([]byte, 32<<10)
					for {
						n, err := s.Read(buf)
						if n > 0 {
							c.Write(buf[:n])
						}
						if err != nil {
							c.Close()
							return
						}
					}
				}()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						r.mu.Write(buf[:n])
						s.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return r
}
