package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshproj/mesh/pki"
)

// proc is a process the benchmark started; measured ones are proxies.
type proc struct {
	name     string
	cmd      *exec.Cmd
	measured bool
	out      *bytes.Buffer
	admin    string // mesh proxies: admin address, for profiles
}

// profile starts fetching CPU profiles from mesh proxies, when asked to,
// and returns a function that waits for them.
func (ps procSet) profile(c *config, s scenario, proto string) func() {
	if c.profile == "" {
		return func() {}
	}
	if err := os.MkdirAll(c.profile, 0o755); err != nil {
		fail("%v", err)
	}
	done := make(chan struct{}, len(ps))
	n := 0
	for _, p := range ps {
		if p.admin == "" {
			continue
		}
		n++
		go func() {
			defer func() { done <- struct{}{} }()
			secs := max(1, int(c.duration.Seconds())-1)
			resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.admin, secs))
			if err != nil {
				return
			}
			defer resp.Body.Close()
			name := strings.NewReplacer(" ", "-").Replace(fmt.Sprintf("%s-%s-%s.prof", s.name, proto, p.name))
			f, err := os.Create(filepath.Join(c.profile, name))
			if err != nil {
				return
			}
			defer f.Close()
			io.Copy(f, resp.Body)
		}()
	}
	return func() {
		for range n {
			<-done
		}
	}
}

type procSet []*proc

func (ps *procSet) start(ctx context.Context, name, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, cmd: exec.Command(bin, args...), out: &bytes.Buffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	*ps = append(*ps, p)
	go func() { <-ctx.Done(); p.cmd.Process.Signal(syscall.SIGTERM) }()
	return p, nil
}

// stopAll stops every process it started, by PID, and waits for them.
func (ps *procSet) stopAll() {
	for _, p := range *ps {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	}
	*ps = nil
}

const clockTicks = 100 // USER_HZ on Linux

// cpu returns user+system CPU seconds of each measured process.
func (ps procSet) cpu() []float64 {
	var out []float64
	for _, p := range ps {
		if !p.measured {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err != nil {
			out = append(out, 0)
			continue
		}
		// Fields after the command name, which is in parentheses.
		fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
		utime, _ := strconv.ParseFloat(fields[11], 64)
		stime, _ := strconv.ParseFloat(fields[12], 64)
		out = append(out, (utime+stime)/clockTicks)
	}
	return out
}

// saveMetrics writes each mesh proxy's metrics (the Go runtime's memory
// classes among them) to the profile directory, when there is one, so
// that private memory can be taken apart after the fixed-rate run.
func (ps procSet) saveMetrics(c *config, s scenario, proto string, rate int) {
	if c.profile == "" {
		return
	}
	for _, p := range ps {
		if p.admin == "" {
			continue
		}
		resp, err := http.Get(fmt.Sprintf("http://%s/metrics", p.admin))
		if err != nil {
			continue
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			continue
		}
		name := strings.NewReplacer(" ", "-").Replace(fmt.Sprintf("%s-%s-%s-at-%d.metrics", s.name, proto, p.name, rate))
		if err := os.WriteFile(filepath.Join(c.profile, name), data, 0o644); err != nil {
			fail("%v", err)
		}
	}
}

// memory returns, per measured process in MB, the peak resident set
// (VmHWM) and the private part of the current one (RssAnon): the rest is
// pages of the binary, shared by every process running it.
func (ps procSet) memory() (peak, private []float64) {
	for _, p := range ps {
		if !p.measured {
			continue
		}
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		field := func(name string) float64 {
			for line := range strings.SplitSeq(string(data), "\n") {
				if rest, ok := strings.CutPrefix(line, name+":"); ok {
					kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
					return kb / 1024
				}
			}
			return 0
		}
		peak = append(peak, field("VmHWM"))
		private = append(private, field("RssAnon"))
	}
	return peak, private
}

type tlsFiles struct {
	ca, server, client string // PEM files; server and client hold cert chain and key
}

// makeTLS writes a CA and two certificates for HAProxy's TLS hop.
func makeTLS(dir string) (tlsFiles, error) {
	now := time.Now()
	root, err := pki.NewRoot("bench root", 24*time.Hour, now)
	if err != nil {
		return tlsFiles{}, err
	}
	issuer, err := root.NewIssuer("bench issuer", 24*time.Hour, now)
	if err != nil {
		return tlsFiles{}, err
	}
	write := func(name, sa string) (string, error) {
		key, err := pki.NewKey()
		if err != nil {
			return "", err
		}
		id := pki.ID{TrustDomain: "bench.local", Namespace: "bench", ServiceAccount: sa}
		der, err := pki.NewCSR(key, id)
		if err != nil {
			return "", err
		}
		csr, _, err := pki.ParseCSR(der)
		if err != nil {
			return "", err
		}
		leaf, err := issuer.Sign(csr, id, 24*time.Hour, now)
		if err != nil {
			return "", err
		}
		keyPEM, err := pki.EncodeKey(key)
		if err != nil {
			return "", err
		}
		path := filepath.Join(dir, name)
		return path, os.WriteFile(path, append(pki.EncodeCerts(leaf, issuer.Cert), keyPEM...), 0o600)
	}
	var f tlsFiles
	f.ca = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(f.ca, pki.EncodeCerts(root.Cert), 0o644); err != nil {
		return f, err
	}
	if f.server, err = write("server.pem", "server"); err != nil {
		return f, err
	}
	f.client, err = write("client.pem", "client")
	return f, err
}

// identityEnv is a running `mesh identity serve` with tokens for the
// client and server proxies.
type identityEnv struct {
	addr, anchors        string
	clientTok, serverTok string
}

func startIdentity(ctx context.Context, c *config, procs *procSet) (*identityEnv, error) {
	dir := filepath.Join(c.work, "identity")
	if out, err := exec.Command(c.mesh, "identity", "init", "--dir", dir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mesh identity init: %v: %s", err, out)
	}
	env := &identityEnv{addr: "127.0.0.1:" + freePort(), anchors: filepath.Join(dir, "trust-anchors.pem")}
	if _, err := procs.start(ctx, "identity", c.mesh, "identity", "serve", "--dir", dir, "--addr", env.addr, "--log-level", "warn"); err != nil {
		return nil, err
	}
	if err := waitTCP(env.addr); err != nil {
		return nil, fmt.Errorf("identity service: %w", err)
	}
	for _, sa := range []string{"client", "server"} {
		out, err := exec.Command(c.mesh, "identity", "token", "--dir", dir, "--namespace", "bench", "--service-account", sa).Output()
		if err != nil {
			return nil, fmt.Errorf("mesh identity token: %w", err)
		}
		path := filepath.Join(c.work, sa+".token")
		if err := os.WriteFile(path, out, 0o600); err != nil {
			return nil, err
		}
		if sa == "client" {
			env.clientTok = path
		} else {
			env.serverTok = path
		}
	}
	return env, nil
}

// setUp starts a scenario's proxies (client side first) and returns the
// address the load generator targets.
func setUp(ctx context.Context, c *config, s scenario, proto string, b backends, tf tlsFiles, id *identityEnv, procs *procSet) (string, error) {
	backend := b.http
	if proto == "grpc" {
		backend = b.grpc
	}
	switch s.kind {
	case none:
		return backend, nil
	case haproxyKind:
		return setUpHAProxy(ctx, c, s, proto, backend, tf, procs)
	default:
		return setUpMesh(ctx, c, s, backend, id, procs)
	}
}

func setUpHAProxy(ctx context.Context, c *config, s scenario, proto, backend string, tf tlsFiles, procs *procSet) (string, error) {
	h2 := proto == "grpc"
	front := "127.0.0.1:" + freePort()
	next := backend
	var configs []string
	if s.hops == 2 {
		// The server-side hop, in front of the backend.
		mid := "127.0.0.1:" + freePort()
		bind := mid
		if s.tls {
			bind += " ssl crt " + tf.server + " ca-file " + tf.ca + " verify required alpn h2,http/1.1"
		} else if h2 {
			bind += " proto h2"
		}
		server := backend
		if h2 {
			server += " proto h2"
		}
		configs = append(configs, haproxyConfig(c.threads, bind, server))
		next = mid
	}
	bind := front
	if h2 {
		bind += " proto h2"
	}
	server := next
	switch {
	case s.hops == 2 && s.tls && h2:
		server += " ssl crt " + tf.client + " ca-file " + tf.ca + " verify required alpn h2"
	case s.hops == 2 && s.tls:
		server += " ssl crt " + tf.client + " ca-file " + tf.ca + " verify required"
	case h2:
		server += " proto h2"
	}
	configs = append([]string{haproxyConfig(c.threads, bind, server)}, configs...)
	for i, cfg := range configs {
		path := filepath.Join(c.work, fmt.Sprintf("haproxy-%d.cfg", i))
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return "", err
		}
		if out, err := exec.Command(c.haproxy, "-c", "-f", path).CombinedOutput(); err != nil {
			return "", fmt.Errorf("haproxy config %d: %v\n%s\n%s", i, err, out, cfg)
		}
		p, err := procs.start(ctx, fmt.Sprintf("haproxy-%d", i), c.haproxy, "-db", "-f", path)
		if err != nil {
			return "", err
		}
		p.measured = true
	}
	return front, waitTCP(front)
}

// haproxyConfig is one HAProxy hop: maxconn well below the machine's
// open-file limit, connection reuse to the next hop, as many threads as a
// mesh proxy gets cores (HAProxy's default is one per CPU).
func haproxyConfig(threads int, bind, server string) string {
	return fmt.Sprintf(`global
  nbthread %d
  maxconn 4096
  log stderr format raw local0 err
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend in
  bind %s
  default_backend out
backend out
  server next %s
`, threads, bind, server)
}

func setUpMesh(ctx context.Context, c *config, s scenario, backend string, id *identityEnv, procs *procSet) (string, error) {
	front := "127.0.0.1:" + freePort()
	endpoint := "      - address: " + backend + "\n"
	var serverArgs []string
	var serverAdmin string
	if s.hops == 2 {
		serverAdmin = "127.0.0.1:" + freePort()
		inbound := "127.0.0.1:" + freePort()
		serverArgs = []string{"proxy", "--log-level", "warn", "--cores", strconv.Itoa(c.threads), "--outbound-addr", "127.0.0.1:" + freePort(),
			"--inbound-addr", inbound, "--admin-addr", serverAdmin, "--inbound-forward", backend,
			"--discovery-file", writeDiscovery(c, "server", "")}
		endpoint = "      - address: " + inbound + "\n"
		if s.tls {
			serverArgs = append(serverArgs, identityArgs(id, "server", id.serverTok)...)
			endpoint += "        identity: spiffe://cluster.local/ns/bench/sa/server\n"
		}
	}
	_, port, _ := strings.Cut(front, ":")
	// fortio names the target by address, so the service is named that way.
	disc := writeDiscovery(c, "client", "services:\n  - name: 127.0.0.1\n    port: "+port+"\n    endpoints:\n"+endpoint)
	admin := "127.0.0.1:" + freePort()
	clientArgs := []string{"proxy", "--log-level", "warn", "--cores", strconv.Itoa(c.threads), "--outbound-addr", front, "--inbound-addr", "127.0.0.1:" + freePort(),
		"--admin-addr", admin, "--discovery-file", disc}
	if s.tls {
		clientArgs = append(clientArgs, identityArgs(id, "client", id.clientTok)...)
	}
	if s.traced {
		clientArgs = append(clientArgs, "--trace-collector", c.collector, "--trace-service", "client", "--trace-sampling", "1")
		serverArgs = append(serverArgs, "--trace-collector", c.collector, "--trace-service", "server")
	}
	p, err := procs.start(ctx, "mesh-client", c.mesh, clientArgs...)
	if err != nil {
		return "", err
	}
	p.measured, p.admin = true, admin
	if serverArgs != nil {
		p, err := procs.start(ctx, "mesh-server", c.mesh, serverArgs...)
		if err != nil {
			return "", err
		}
		p.measured, p.admin = true, serverAdmin
		if err := waitHTTP("http://" + p.admin + "/ready"); err != nil {
			return "", err
		}
	}
	return front, waitHTTP("http://" + admin + "/ready")
}

func identityArgs(id *identityEnv, sa, token string) []string {
	return []string{"--identity", "spiffe://cluster.local/ns/bench/sa/" + sa, "--identity-addr", id.addr,
		"--identity-trust-anchors", id.anchors, "--identity-token-file", token}
}

func writeDiscovery(c *config, name, contents string) string {
	if contents == "" {
		contents = "services: []\n"
	}
	path := filepath.Join(c.work, name+"-discovery.yaml")
	if err := os.WriteFile(path, []byte(contents), 0o644); err != nil {
		fail("%v", err)
	}
	return path
}
