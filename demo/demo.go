// Package demo runs a whole mesh on 127.0.0.1 with no cluster: a local
// control plane (identity service and a discovery file), demo workloads
// each with its own `mesh proxy` process, mTLS between all of them, and a
// traffic generator, so that `mesh stat`, `mesh tap` and `mesh check` have
// a living mesh to look at. It cleans up every process and file it made.
package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/meshproj/mesh/identity"
	"github.com/meshproj/mesh/internal/freeport"
	"github.com/meshproj/mesh/internal/httpserve"
	"github.com/meshproj/mesh/inventory"
)

// Options configure a demo.
type Options struct {
	// Mesh is the mesh binary the proxies run (this one).
	Mesh string
	// Duration ends the demo; 0 runs until ctx ends (Ctrl-C).
	Duration time.Duration
	// PortBase, when set, numbers every port from it; otherwise free ports
	// are picked.
	PortBase int
	// StatePath is where stat, tap and check find the demo.
	StatePath string
	// Rate is the traffic generator's requests per second.
	Rate int
	Out  io.Writer
	Log  *slog.Logger
}

const (
	trustDomain = "cluster.local"
	namespace   = "demo"
)

// instance is one workload replica: its app and its proxy.
type instance struct {
	workload, name                 string
	app                            http.Handler // nil: no app (traffic generator)
	appAddr                        string
	outbound, inbound, admin, logf string
	cmd                            *exec.Cmd
	done                           chan struct{} // closed when the proxy exited
}

type ports struct {
	next int
}

func (p *ports) take() (string, error) {
	if p.next > 0 {
		a := "127.0.0.1:" + strconv.Itoa(p.next)
		p.next++
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return "", fmt.Errorf("port %s is taken; choose another --port-base: %w", a, err)
		}
		ln.Close()
		return a, nil
	}
	return freeport.Loopback()
}

// Run starts the demo and blocks until it ends, then cleans up.
func Run(ctx context.Context, o Options) error {
	if o.Rate <= 0 {
		o.Rate = 20
	}
	if err := refuseSecondDemo(ctx, o.StatePath); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "mesh-demo-")
	if err != nil {
		return err
	}
	serversCtx, stopServers := context.WithCancel(context.Background())
	d := &run{o: o, work: work, ports: &ports{next: o.PortBase}, serversCtx: serversCtx, stopServers: stopServers}
	defer func() {
		d.cleanup()
		fmt.Fprintln(o.Out, "demo stopped; every process and file it made is gone")
	}()
	if err := d.startIdentity(); err != nil {
		return err
	}
	if err := d.planInstances(); err != nil {
		return err
	}
	if err := d.startInstances(ctx); err != nil {
		return err
	}
	if err := d.writeState(); err != nil {
		return err
	}
	return d.serve(ctx)
}

// refuseSecondDemo fails when a demo already runs with this state file.
func refuseSecondDemo(ctx context.Context, statePath string) error {
	if _, err := os.Stat(statePath); err != nil {
		return nil
	}
	m, _ := inventory.StateFile{Path: statePath}.Mesh(ctx)
	if m != nil && len(m.Workloads) > 0 && len(m.Workloads[0].Instances) > 0 && alive(m.Workloads[0].Instances[0].Admin) {
		return fmt.Errorf("a demo is already running (state file %s); stop it first, or pass another --state-file", statePath)
	}
	return nil
}

// run is one demo's state, from start to cleanup.
type run struct {
	o     Options
	work  string // every file the demo makes is under it
	ports *ports
	insts []*instance
	// The local control plane.
	idDir, idAddr, discovery string
	tokens                   *identity.LocalTokens
	// The demo's own servers (identity, the apps) run until cleanup, which
	// stops the proxies first, then them.
	serversCtx  context.Context
	stopServers context.CancelFunc
	servers     errgroup.Group
}

func (d *run) cleanup() {
	for _, in := range d.insts {
		stopProcess(in)
	}
	d.stopServers()
	d.servers.Wait()
	os.Remove(d.o.StatePath)
	os.RemoveAll(d.work)
}

// startIdentity makes a trust domain in the work directory and serves it.
func (d *run) startIdentity() error {
	d.idDir = filepath.Join(d.work, "identity")
	if err := identity.InitDir(d.idDir); err != nil {
		return err
	}
	dir, err := identity.LoadDir(d.idDir)
	if err != nil {
		return err
	}
	d.tokens = dir.Tokens
	if d.idAddr, err = d.ports.take(); err != nil {
		return err
	}
	// The identity service's routine messages would drown the demo's own
	// output; it speaks up only when something is wrong.
	idLog := slog.New(d.o.Log.Handler().WithGroup("identity"))
	if !d.o.Log.Enabled(context.Background(), slog.LevelDebug) {
		idLog = slog.New(warnOnly{d.o.Log.Handler()})
	}
	idSrv := &identity.Server{TrustDomain: trustDomain, Validator: dir.Tokens, Log: idLog}
	idSrv.SetIssuer(dir.Issuer)
	idLn, err := net.Listen("tcp", d.idAddr)
	if err != nil {
		return err
	}
	d.servers.Go(func() error { return idSrv.Serve(d.serversCtx, idLn) })
	return nil
}

// planInstances names the workloads' replicas and gives each its ports,
// then writes the discovery file that describes them.
func (d *run) planInstances() error {
	d.insts = []*instance{
		{workload: "traffic", name: "traffic-1"},
		{workload: "web", name: "web-1"},
		{workload: "api", name: "api-1", app: apiHandler("api-1", 3*time.Millisecond)},
		{workload: "api", name: "api-2", app: apiHandler("api-2", 40*time.Millisecond)},
		{workload: "auth", name: "auth-1", app: authHandler(0.05)},
	}
	var err error
	for _, in := range d.insts {
		for _, p := range []*string{&in.outbound, &in.inbound, &in.admin} {
			if *p, err = d.ports.take(); err != nil {
				return err
			}
		}
		if in.workload != "traffic" {
			if in.appAddr, err = d.ports.take(); err != nil {
				return err
			}
		}
		if in.workload == "web" {
			in.app = webHandler(in.outbound)
		}
	}
	d.discovery = filepath.Join(d.work, "discovery.yaml")
	return os.WriteFile(d.discovery, []byte(discoveryFile(d.insts)), 0o644)
}

// startInstances starts each replica's app and proxy and waits until every
// proxy is ready.
func (d *run) startInstances(ctx context.Context) error {
	anchors := filepath.Join(d.idDir, identity.AnchorsFile)
	for _, in := range d.insts {
		if in.app != nil {
			ln, err := net.Listen("tcp", in.appAddr)
			if err != nil {
				return err
			}
			hs := &http.Server{Handler: in.app, ReadHeaderTimeout: 10 * time.Second}
			d.servers.Go(func() error { return httpserve.Run(d.serversCtx, in.name, hs, ln) })
		}
		token := filepath.Join(d.work, in.name+".token")
		if err := os.WriteFile(token, []byte(d.tokens.Issue(identity.Workload{Namespace: namespace, ServiceAccount: in.workload}, 24*time.Hour)), 0o600); err != nil {
			return err
		}
		in.logf = filepath.Join(d.work, in.name+".log")
		if err := startProxy(d.o, in, d.discovery, d.idAddr, anchors, token); err != nil {
			return err
		}
	}
	for _, in := range d.insts {
		if err := waitReady(ctx, in); err != nil {
			return err
		}
	}
	return nil
}

// writeState tells stat, tap and check where the demo's proxies are.
func (d *run) writeState() error {
	mesh := &inventory.Mesh{ControlPlane: inventory.ControlPlane{
		IdentityAddr: d.idAddr, TrustAnchors: filepath.Join(d.idDir, identity.AnchorsFile), TrustDomain: trustDomain, DiscoveryFile: d.discovery,
	}}
	for _, wl := range []string{"traffic", "web", "api", "auth"} {
		w := inventory.Workload{Kind: "deploy", Name: wl, Namespace: namespace, Identity: spiffe(wl)}
		if wl != "traffic" {
			w.Service = wl + ":80"
		}
		for _, in := range d.insts {
			if in.workload == wl {
				w.Instances = append(w.Instances, inventory.Instance{Name: in.name, Admin: in.admin, Inbound: in.inbound, PID: in.cmd.Process.Pid})
			}
		}
		mesh.Workloads = append(mesh.Workloads, w)
	}
	if err := (inventory.StateFile{Path: d.o.StatePath}).Write(mesh); err != nil {
		return fmt.Errorf("writing state file: %w", err)
	}
	return nil
}

// serve sends traffic until ctx ends or --duration passes; a proxy that
// exits is reported and the demo goes on without it.
func (d *run) serve(ctx context.Context) error {
	runCtx := ctx
	if d.o.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, d.o.Duration)
		defer cancel()
	}
	go traffic(runCtx, d.insts[0].outbound, d.o.Rate)
	printIntro(d.o, d.insts, d.idAddr, d.work)

	exited := make(chan string, len(d.insts))
	for _, in := range d.insts {
		go func() {
			<-in.done
			exited <- in.name
		}()
	}
	select {
	case <-runCtx.Done():
	case name := <-exited:
		if runCtx.Err() == nil {
			fmt.Fprintf(d.o.Out, "the proxy of %s exited (its log: %s); the demo goes on without it\n", name, filepath.Join(d.work, name+".log"))
			<-runCtx.Done()
		}
	}
	return nil
}

// warnOnly passes on warnings and errors only.
type warnOnly struct{ slog.Handler }

func (w warnOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && w.Handler.Enabled(ctx, l)
}

func spiffe(sa string) string { return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + sa }

func discoveryFile(insts []*instance) string {
	var b strings.Builder
	b.WriteString("# written by mesh demo\nservices:\n")
	for _, svc := range []string{"web", "api", "auth"} {
		fmt.Fprintf(&b, "  - name: %s\n    port: 80\n", svc)
		if svc == "api" {
			b.WriteString("    timeouts: {request: 2s}\n")
		}
		b.WriteString("    endpoints:\n")
		for _, in := range insts {
			if in.workload == svc {
				fmt.Fprintf(&b, "      - address: %s\n        identity: %s\n", in.inbound, spiffe(svc))
			}
		}
	}
	// api admits web alone: the traffic generator's own calls to api are
	// refused. A Server selects the port the app listens on; each replica's
	// app has its own port here, so each has its Server (on a cluster one
	// Server selects the same port of every pod).
	fmt.Fprintf(&b, "policies:\n  - identity: %s\n    servers:\n", spiffe("api"))
	for _, in := range insts {
		if in.workload == "api" {
			_, port, _ := net.SplitHostPort(in.appAddr)
			fmt.Fprintf(&b, "      - name: %s-http\n        port: %s\n        authorizations:\n          - name: web-only\n            identities: [%s]\n", in.name, port, spiffe("web"))
		}
	}
	return b.String()
}

func startProxy(o Options, in *instance, discovery, idAddr, anchors, token string) error {
	logf, err := os.Create(in.logf)
	if err != nil {
		return err
	}
	args := []string{"proxy", "--log-format", "json", "--log-level", "info",
		"--outbound-addr", in.outbound, "--inbound-addr", in.inbound, "--admin-addr", in.admin,
		"--discovery-file", discovery, "--shutdown-grace", "2s",
		"--identity", spiffe(in.workload), "--identity-addr", idAddr, "--identity-trust-anchors", anchors, "--identity-token-file", token,
		"--label", "namespace=" + namespace + ",workload=" + in.workload + ",instance=" + in.name}
	if in.appAddr != "" {
		args = append(args, "--inbound-forward", in.appAddr)
	}
	in.cmd = exec.Command(o.Mesh, args...)
	in.cmd.Stdout, in.cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C in the terminal reaches the demo, which
	// then stops its proxies in order, instead of every process at once.
	in.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := in.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting the proxy of %s: %w", in.name, err)
	}
	logf.Close()
	in.done = make(chan struct{})
	go func() { in.cmd.Wait(); close(in.done) }()
	return nil
}

func waitReady(ctx context.Context, in *instance) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-in.done:
			deadline = time.Time{}
		default:
		}
		if alive(in.admin) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(in.logf)
	return fmt.Errorf("the proxy of %s did not become ready:\n%s", in.name, tailOf(string(log), 2000))
}

// alive reports whether a proxy's admin endpoint says it is ready.
func alive(admin string) bool {
	c := &http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + admin + "/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// stopProcess stops a proxy the demo started, by its PID: SIGTERM (the
// proxy drains), then SIGKILL if it does not exit.
func stopProcess(in *instance) {
	if in.cmd == nil || in.done == nil {
		return
	}
	select {
	case <-in.done:
		return
	default:
	}
	in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.done:
	case <-time.After(5 * time.Second):
		in.cmd.Process.Kill()
		<-in.done
	}
}

func printIntro(o Options, insts []*instance, idAddr, work string) {
	w := o.Out
	fmt.Fprintln(w, "mesh demo is running on 127.0.0.1 (mTLS between every proxy):")
	fmt.Fprintf(w, "  %-10s %-22s %-22s %s\n", "INSTANCE", "PROXY INBOUND", "PROXY ADMIN", "APP")
	for _, in := range insts {
		app := in.appAddr
		if in.workload == "traffic" {
			app = fmt.Sprintf("(sends %d requests/s to web)", o.Rate)
		}
		fmt.Fprintf(w, "  %-10s %-22s %-22s %s\n", in.name, in.inbound, in.admin, app)
	}
	fmt.Fprintf(w, "  identity service %s; files in %s; state in %s\n\n", idAddr, work, o.StatePath)
	fmt.Fprintln(w, "In another terminal, try:")
	fmt.Fprintln(w, "  mesh stat                    # success, RPS and latency per workload")
	fmt.Fprintln(w, "  mesh stat deploy/web --to deploy/api")
	fmt.Fprintln(w, "  mesh tap deploy/api --path /items/books")
	fmt.Fprintln(w, "  mesh authz deploy/api        # api admits only web; traffic's own calls to it are refused")
	fmt.Fprintln(w, "  mesh check")
	if o.Duration > 0 {
		fmt.Fprintf(w, "\nThe demo stops by itself after %s (or Ctrl-C).\n", o.Duration)
	} else {
		fmt.Fprintln(w, "\nCtrl-C stops the demo and cleans up.")
	}
}
