// Command meshbench measures what a proxy costs on this machine: the same
// load (fortio) against the same backend (fortio's server) directly, through
// HAProxy and through mesh proxy, one hop, two hops, and two hops with TLS
// between them, all on 127.0.0.1. It prints absolute figures and, more to
// the point, ratios from the one run. See bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/meshproj/mesh/internal/freeport"
)

type config struct {
	mesh, fortio, haproxy string
	duration              time.Duration
	rates                 []int
	conns                 int
	size                  int
	grpc                  bool
	work                  string
	only                  string
	profile               string
	threads               int
	rounds                int
	// collector takes the traced scenario's spans (OTLP/HTTP), counting
	// them in exports and exportBytes, and keeps nothing.
	collector            string
	exports, exportBytes atomic.Int64
}

func main() {
	var c config
	var rates string
	smoke := flag.Bool("smoke", false, "a quick run (1s per measurement) that proves the benchmark works")
	flag.StringVar(&c.mesh, "mesh", "", "mesh binary (default: build it)")
	flag.StringVar(&c.fortio, "fortio", "fortio", "fortio binary")
	flag.StringVar(&c.haproxy, "haproxy", "haproxy", "haproxy binary")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "length of each measurement")
	flag.StringVar(&rates, "rates", "1000,4000", "fixed request rates to measure latency at")
	flag.IntVar(&c.conns, "connections", 16, "client connections")
	flag.IntVar(&c.size, "size", 100, "response body size in bytes")
	flag.BoolVar(&c.grpc, "grpc", true, "also measure gRPC on the two-hop TLS scenarios")
	flag.StringVar(&c.only, "only", "", "run only scenarios whose name contains this")
	flag.IntVar(&c.threads, "threads", 1, "threads each proxy runs on: HAProxy's nbthread, mesh's --cores (the same for both, so that neither gets more of the machine)")
	flag.IntVar(&c.rounds, "rounds", 1, "run every scenario this many times, interleaved, and report medians (and the spread of the mesh/HAProxy ratios)")
	flag.StringVar(&c.profile, "profile", "", "write CPU profiles of mesh proxies during the max-throughput run, and their metrics after the first fixed-rate run, to this directory")
	flag.Parse()
	if *smoke {
		c.duration = time.Second
		c.rounds = 1
	}
	if c.rounds <= 0 {
		fail("--rounds must be at least 1")
	}
	for _, r := range strings.Split(rates, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || n <= 0 {
			fail("--rates: %q is not a rate", r)
		}
		c.rates = append(c.rates, n)
	}
	if c.threads <= 0 {
		fail("--threads must be at least 1")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, &c); err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "meshbench: "+format+"\n", args...)
	os.Exit(1)
}

func run(ctx context.Context, c *config) error {
	for _, tool := range []*string{&c.fortio, &c.haproxy} {
		p, err := exec.LookPath(*tool)
		if err != nil {
			return fmt.Errorf("%s not found: run bench/run.sh, which installs it", *tool)
		}
		*tool = p
	}
	work, err := os.MkdirTemp("", "meshbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	c.work = work
	if c.mesh == "" {
		c.mesh = filepath.Join(work, "mesh")
		build := exec.Command("go", "build", "-o", c.mesh, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Dir = repoRoot()
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("building mesh: %v\n%s", err, out)
		}
	}
	var procs procSet
	defer procs.stopAll()

	backendHTTP, backendGRPC := freePort(), freePort()
	if _, err := procs.start(ctx, "backend", c.fortio, "server", "-http-port", "127.0.0.1:"+backendHTTP,
		"-grpc-port", "127.0.0.1:"+backendGRPC, "-redirect-port", "disabled", "-loglevel", "Error"); err != nil {
		return err
	}
	if err := waitHTTP("http://127.0.0.1:" + backendHTTP + "/echo"); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	if err := startCollector(ctx, c); err != nil {
		return err
	}
	tlsFiles, err := makeTLS(work)
	if err != nil {
		return err
	}
	ident, err := startIdentity(ctx, c, &procs)
	if err != nil {
		return err
	}

	backends := backends{http: "127.0.0.1:" + backendHTTP, grpc: "127.0.0.1:" + backendGRPC}
	scenarios := []scenario{
		{name: "direct", kind: none, hops: 0},
		{name: "haproxy 1 hop", kind: haproxyKind, hops: 1},
		{name: "mesh 1 hop", kind: meshKind, hops: 1},
		{name: "haproxy 2 hops", kind: haproxyKind, hops: 2},
		{name: "mesh 2 hops", kind: meshKind, hops: 2},
		{name: "haproxy 2 hops TLS", kind: haproxyKind, hops: 2, tls: true},
		{name: "mesh 2 hops mTLS", kind: meshKind, hops: 2, tls: true},
		// Every request traced at both proxies, spans sent to a collector
		// that takes them and throws them away: the cost of tracing on.
		{name: "mesh 2 hops mTLS traced", kind: meshKind, hops: 2, tls: true, traced: true},
	}
	// Rounds interleave the scenarios, so that a slow minute of this
	// shared machine lands on all of them rather than on one.
	var rounds [][]result
	for round := range c.rounds {
		var results []result
		for _, s := range scenarios {
			if c.only != "" && !strings.Contains(s.name, c.only) && s.name != "direct" {
				continue
			}
			for _, proto := range []string{"http", "grpc"} {
				if proto == "grpc" && (!c.grpc || (s.hops != 0 && !s.tls)) {
					continue
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r, err := measure(ctx, c, s, proto, backends, tlsFiles, ident)
				if err != nil {
					return fmt.Errorf("%s (%s): %w", s.name, proto, err)
				}
				results = append(results, r)
				fmt.Fprintf(os.Stderr, "done: round %d/%d: %s %s\n", round+1, c.rounds, s.name, proto)
				if s.traced {
					fmt.Fprintf(os.Stderr, "  the collector has taken %d exports (%.1f MB) so far\n", c.exports.Load(), float64(c.exportBytes.Load())/1e6)
				}
			}
		}
		rounds = append(rounds, results)
	}
	report(os.Stdout, c, medians(rounds), rounds)
	return nil
}

// medians combines rounds (the same scenarios in the same order) into one
// result per scenario: the median of every figure, the sum of errors.
func medians(rounds [][]result) []result {
	out := make([]result, len(rounds[0]))
	for i := range out {
		pick := func(f func(result) float64) float64 {
			v := make([]float64, len(rounds))
			for k, rs := range rounds {
				v[k] = f(rs[i])
			}
			return median(v)
		}
		r := rounds[0][i]
		r.at = append([]latency(nil), r.at...)
		for j := range r.at {
			r.at[j].p50 = pick(func(x result) float64 { return x.at[j].p50 })
			r.at[j].p90 = pick(func(x result) float64 { return x.at[j].p90 })
			r.at[j].p99 = pick(func(x result) float64 { return x.at[j].p99 })
			r.at[j].p999 = pick(func(x result) float64 { return x.at[j].p999 })
			r.at[j].actual = pick(func(x result) float64 { return x.at[j].actual })
			r.at[j].errors = 0
			for _, rs := range rounds {
				r.at[j].errors += rs[i].at[j].errors
			}
		}
		r.maxRPS = pick(func(x result) float64 { return x.maxRPS })
		r.maxErr = 0
		for _, rs := range rounds {
			r.maxErr += rs[i].maxErr
		}
		perProcess := func(f func(result) []float64) []float64 {
			v := make([]float64, len(f(r)))
			for p := range v {
				v[p] = pick(func(x result) float64 {
					if xs := f(x); p < len(xs) {
						return xs[p]
					}
					return 0
				})
			}
			return v
		}
		r.cpu = perProcess(func(x result) []float64 { return x.cpu })
		r.cpuPer1k = perProcess(func(x result) []float64 { return x.cpuPer1k })
		r.rss = perProcess(func(x result) []float64 { return x.rss })
		r.anon = perProcess(func(x result) []float64 { return x.anon })
		out[i] = r
	}
	return out
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

type kind int

const (
	none kind = iota
	haproxyKind
	meshKind
)

type scenario struct {
	name string
	kind kind
	hops int
	tls  bool
	// traced: every request traced at every proxy (--trace-sampling 1),
	// spans sent to the collector at config.collector.
	traced bool
}

type backends struct{ http, grpc string }

// latency is a fixed-rate measurement.
type latency struct {
	rate                int
	actual              float64
	p50, p90, p99, p999 float64 // microseconds
	errors              int
}

type result struct {
	scenario scenario
	proto    string
	at       []latency
	maxRPS   float64
	maxErr   int
	cpu      []float64 // seconds per proxy process, whole scenario
	cpuPer1k []float64 // cores per 1,000 rps per proxy process, during the first fixed-rate run
	rss      []float64 // peak RSS (MB) per proxy after the fixed-rate runs
	anon     []float64 // private (anonymous) RSS (MB) per proxy then
}

func measure(ctx context.Context, c *config, s scenario, proto string, b backends, tf tlsFiles, id *identityEnv) (result, error) {
	var procs procSet
	defer procs.stopAll()
	target, err := setUp(ctx, c, s, proto, b, tf, id, &procs)
	if err != nil {
		return result{}, err
	}
	r := result{scenario: s, proto: proto}
	cpu0 := procs.cpu()
	// Warm up connections and caches.
	if _, err := load(ctx, c, proto, target, 500, min(time.Second, c.duration)); err != nil {
		return r, fmt.Errorf("warm-up: %w", err)
	}
	for i, rate := range c.rates {
		before := procs.cpu()
		l, err := load(ctx, c, proto, target, rate, c.duration)
		if err != nil {
			return r, err
		}
		r.at = append(r.at, l)
		if i == 0 {
			// The targets are RSS and CPU at the first (lowest) rate.
			r.rss, r.anon = procs.memory()
			procs.saveMetrics(c, s, proto, rate)
			for p, after := range procs.cpu() {
				r.cpuPer1k = append(r.cpuPer1k, safeDiv((after-before[p])/c.duration.Seconds(), l.actual/1000))
			}
		}
	}
	profiled := procs.profile(c, s, proto)
	l, err := load(ctx, c, proto, target, 0, c.duration)
	profiled()
	if err != nil {
		return r, err
	}
	r.maxRPS, r.maxErr = l.actual, l.errors
	cpu1 := procs.cpu()
	for i := range cpu1 {
		r.cpu = append(r.cpu, cpu1[i]-cpu0[i])
	}
	return r, nil
}

// load runs fortio at rate (0: as fast as it goes) and reads its result.
func load(ctx context.Context, c *config, proto, target string, rate int, d time.Duration) (latency, error) {
	out := filepath.Join(c.work, "fortio.json")
	args := []string{"load", "-qps", strconv.Itoa(rate), "-c", strconv.Itoa(c.conns), "-t", d.String(),
		"-r", "0.00001", "-p", "50,90,99,99.9", "-json", out, "-loglevel", "Error", "-uniform", "-nocatchup"}
	if proto == "grpc" {
		args = append(args, "-grpc", "-ping", "-payload-size", strconv.Itoa(c.size), target)
	} else {
		args = append(args, "http://"+target+"/echo?size="+strconv.Itoa(c.size))
	}
	cmd := exec.CommandContext(ctx, c.fortio, args...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return latency{}, fmt.Errorf("fortio %s: %v\n%s", strings.Join(args, " "), err, tail(msg))
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return latency{}, err
	}
	var res struct {
		ActualQPS         float64
		RetCodes          map[string]int
		DurationHistogram struct {
			Count       int
			Percentiles []struct {
				Percentile float64
				Value      float64
			}
		}
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return latency{}, fmt.Errorf("fortio output: %w", err)
	}
	l := latency{rate: rate, actual: res.ActualQPS}
	ok := res.RetCodes["200"] + res.RetCodes["SERVING"]
	l.errors = res.DurationHistogram.Count - ok
	for _, p := range res.DurationHistogram.Percentiles {
		us := p.Value * 1e6
		switch p.Percentile {
		case 50:
			l.p50 = us
		case 90:
			l.p90 = us
		case 99:
			l.p99 = us
		case 99.9:
			l.p999 = us
		}
	}
	return l, nil
}

func tail(b []byte) string {
	s := string(b)
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

func repoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return dir
}

func freePort() string {
	a, err := freeport.Loopback()
	if err != nil {
		fail("no free port: %v", err)
	}
	_, port, _ := net.SplitHostPort(a)
	return port
}

func waitHTTP(url string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not answering", url)
}

// startCollector serves OTLP/HTTP trace exports on loopback until ctx
// ends: each is read whole and answered with an empty
// ExportTraceServiceResponse (no rejected spans).
func startCollector(ctx context.Context, c *config) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	c.collector = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		c.exports.Add(1)
		c.exportBytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	context.AfterFunc(ctx, func() { srv.Close() })
	return nil
}

func waitTCP(addr string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listening on %s", addr)
}

func report(w io.Writer, c *config, results []result, rounds [][]result) {
	fmt.Fprintf(w, "mesh proxy vs HAProxy vs direct on 127.0.0.1: %d connections, %d-byte responses, %s per measurement, %d thread(s) per proxy", c.conns, c.size, c.duration, c.threads)
	if len(rounds) > 1 {
		fmt.Fprintf(w, "; medians of %d interleaved rounds (errors summed)", len(rounds))
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "scenario\tproto\t")
	for _, r := range c.rates {
		fmt.Fprintf(tw, "p50@%d\tp90@%d\tp99@%d\tp99.9@%d\t", r, r, r, r)
	}
	fmt.Fprintf(tw, "max rps\terrors\tCPU s\tcores/1k rps@%d\tpeak RSS MB\tprivate MB\t\n", c.rates[0])
	byName := map[string]result{}
	for _, r := range results {
		byName[r.scenario.name+"/"+r.proto] = r
		fmt.Fprintf(tw, "%s\t%s\t", r.scenario.name, r.proto)
		errs := r.maxErr
		for _, l := range r.at {
			fmt.Fprintf(tw, "%.0f\t%.0f\t%.0f\t%.0f\t", l.p50, l.p90, l.p99, l.p999)
			errs += l.errors
		}
		fmt.Fprintf(tw, "%.0f\t%d\t%s\t%s\t%s\t%s\t\n", r.maxRPS, errs, joinF(r.cpu, "%.1f"), joinF(r.cpuPer1k, "%.3f"), joinF(r.rss, "%.1f"), joinF(r.anon, "%.1f"))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nlatencies in µs; CPU seconds over the whole scenario, and cores per 1,000 requests a second during the %d rps run; peak RSS (VmHWM) and private RSS (RssAnon, the part not shared with other processes running the same binary) after the %d rps run, per proxy process (client side first)\n", c.rates[0], c.rates[0])

	direct, ok := byName["direct/http"]
	if !ok || len(direct.at) == 0 {
		return
	}
	fmt.Fprintf(w, "\nadded latency vs direct at %d rps (p50 / p99), and throughput relative to direct:\n", c.rates[0])
	for _, r := range results {
		if r.scenario.kind == none {
			continue
		}
		d := byName["direct/"+r.proto]
		if len(d.at) == 0 || len(r.at) == 0 {
			continue
		}
		fmt.Fprintf(w, "  %-20s %-4s +%4.0f µs / +%5.0f µs   throughput %.2f×\n", r.scenario.name, r.proto,
			r.at[0].p50-d.at[0].p50, r.at[0].p99-d.at[0].p99, r.maxRPS/d.maxRPS)
	}
	for _, proto := range []string{"http", "grpc"} {
		off, on := byName["mesh 2 hops mTLS/"+proto], byName["mesh 2 hops mTLS traced/"+proto]
		if len(off.at) == 0 || len(on.at) == 0 {
			continue
		}
		fmt.Fprintf(w, "\ntracing every request at both proxies, %s: p99 at %d rps %+.0f µs (%.0f vs %.0f), throughput %.2f× (%.0f vs %.0f rps)\n",
			proto, c.rates[0], on.at[0].p99-off.at[0].p99, on.at[0].p99, off.at[0].p99, safeDiv(on.maxRPS, off.maxRPS), on.maxRPS, off.maxRPS)
	}
	fmt.Fprintln(w, "\nmesh vs HAProxy (same scenario, same run):")
	for _, pair := range [][2]string{{"mesh 1 hop", "haproxy 1 hop"}, {"mesh 2 hops", "haproxy 2 hops"}, {"mesh 2 hops mTLS", "haproxy 2 hops TLS"}} {
		for _, proto := range []string{"http", "grpc"} {
			m, h, d := byName[pair[0]+"/"+proto], byName[pair[1]+"/"+proto], byName["direct/"+proto]
			if len(m.at) == 0 || len(h.at) == 0 || len(d.at) == 0 {
				continue
			}
			addM, addH := m.at[0].p99-d.at[0].p99, h.at[0].p99-d.at[0].p99
			fmt.Fprintf(w, "  %-18s %-4s added p99 at %d rps: mesh %.0f µs, HAProxy %.0f µs (%.2f×); throughput %.2f× HAProxy's; cores per 1k rps mesh %s vs HAProxy %s; peak RSS mesh %s MB vs HAProxy %s MB\n",
				pair[0], proto, c.rates[0], addM, addH, safeDiv(addM, addH), safeDiv(m.maxRPS, h.maxRPS), joinF(m.cpuPer1k, "%.3f"), joinF(h.cpuPer1k, "%.3f"), joinF(m.rss, "%.1f"), joinF(h.rss, "%.1f"))
			if len(rounds) > 1 {
				var p99s, tputs []float64
				for _, rs := range rounds {
					m, h, d := find(rs, pair[0], proto), find(rs, pair[1], proto), find(rs, "direct", proto)
					p99s = append(p99s, safeDiv(m.at[0].p99-d.at[0].p99, h.at[0].p99-d.at[0].p99))
					tputs = append(tputs, safeDiv(m.maxRPS, h.maxRPS))
				}
				fmt.Fprintf(w, "  %-18s %-4s round by round: added p99 %s×; throughput %s×\n", "", "", joinSep(p99s, "%.2f", " "), joinSep(tputs, "%.2f", " "))
			}
		}
	}
}

// find is a round's result for one scenario (all rounds hold the same ones).
func find(rs []result, name, proto string) result {
	for _, r := range rs {
		if r.scenario.name == name && r.proto == proto {
			return r
		}
	}
	return result{}
}

func safeDiv(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// joinF joins per-process figures: "12.1+11.9".
func joinF(v []float64, format string) string { return joinSep(v, format, "+") }

func joinSep(v []float64, format, sep string) string {
	if len(v) == 0 {
		return "-"
	}
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, sep)
}
