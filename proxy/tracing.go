package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// This file is tracing: with a collector, each request that carries a
// sampled trace context (W3C Trace Context or B3), or that the sampling
// ratio starts a trace for, gets a span from each proxy it passes (a
// server span inbound, a client span outbound), exported over OTLP/HTTP
// in batches. The proxy's span becomes the parent the next hop sees.
// Without a collector the handlers are not wrapped.

// Span queue bounds: at most traceQueueSize finished spans wait for the
// collector (more are dropped and counted), sent traceBatchSize at a time,
// at least every traceBatchEvery. Batches are small because encoding one
// holds the proxy's one thread: at 1,000 traced requests a second through
// two proxies, batches of 512 added 4.7 ms to the p99, of 64 0.7 ms, for
// the same throughput (bench/README.md, Tracing).
const (
	traceQueueSize  = 2048
	traceBatchSize  = 64
	traceBatchEvery = time.Second
	traceExportWait = 5 * time.Second
	// traceAttrMax caps an attribute's length (a path or user agent).
	traceAttrMax = 512
)

// tracing starts, propagates and exports the proxy's spans.
type tracing struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	queue    *spanQueue
	sampling float64
	w3c      propagation.TraceContext
	// Either B3 propagator reads both encodings; each writes its own.
	b3single propagation.TextMapPropagator
	b3multi  propagation.TextMapPropagator
}

// newTracing exports to the collector at endpoint (a CollectorURL);
// sampling is the share of requests without a trace context that start
// one. Spans name the workload's service (labels' namespace and pod).
func newTracing(endpoint string, sampling float64, service string, labels map[string]string, reg prometheus.Registerer) (*tracing, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, err
	}
	opts := []otlptracehttp.Option{
		otlptracehttp.WithEndpointURL(endpoint), otlptracehttp.WithTimeout(traceExportWait),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: true, InitialInterval: 250 * time.Millisecond, MaxInterval: time.Second, MaxElapsedTime: traceExportWait}),
	}
	if u.Scheme == "http" {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("trace collector %s: %w", endpoint, err)
	}
	q := newSpanQueue(exp, reg)
	attrs := []attribute.KeyValue{attribute.String("service.name", service)}
	if ns := labels["namespace"]; ns != "" {
		attrs = append(attrs, attribute.String("service.namespace", ns), attribute.String("k8s.namespace.name", ns))
	}
	if pod := labels["pod"]; pod != "" {
		attrs = append(attrs, attribute.String("k8s.pod.name", pod))
	}
	limits := sdktrace.NewSpanLimits()
	limits.AttributeValueLengthLimit = traceAttrMax
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(sampling))),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithRawSpanLimits(limits),
		sdktrace.WithSpanProcessor(q),
	)
	return &tracing{
		provider: tp, tracer: tp.Tracer("mesh-proxy"), queue: q, sampling: sampling,
		b3single: b3.New(b3.WithInjectEncoding(b3.B3SingleHeader)),
		b3multi:  b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader)),
	}, nil
}

// start begins the span of a request, and rewrites its trace headers so
// that the next hop is the span's child, in the encoding the request came
// with (W3C for a trace the proxy starts). A request without a trace
// context gets no span unless the sampling ratio is above zero; then it is
// returned as it is, with a nil span.
func (t *tracing) start(r *http.Request, d direction) (*http.Request, trace.Span) {
	h := r.Header
	carrier := propagation.HeaderCarrier(h)
	ctx := r.Context()
	inject := t.w3c.Inject
	switch {
	case h.Get("Traceparent") != "":
		ctx = t.w3c.Extract(ctx, carrier)
	case h.Get("B3") != "":
		ctx, inject = t.b3single.Extract(ctx, carrier), t.b3single.Inject
	case h.Get("X-B3-Traceid") != "":
		ctx, inject = t.b3multi.Extract(ctx, carrier), t.b3multi.Inject
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		if t.sampling <= 0 {
			return r, nil
		}
		inject = t.w3c.Inject
	}
	kind, name := trace.SpanKindServer, r.Method
	if d == outbound {
		kind = trace.SpanKindClient
	}
	if isGRPC(r) {
		name = strings.TrimPrefix(r.URL.Path, "/")
	}
	ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(kind))
	inject(ctx, carrier)
	return r.WithContext(ctx), span
}

// end finishes a request's span with what the proxy saw of it.
func (t *tracing) end(span trace.Span, d direction, r *http.Request, rec *accessRecord, attempts int) {
	if !span.IsRecording() {
		span.End()
		return
	}
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", r.Method),
		attribute.String("url.path", r.URL.Path),
		attribute.String("network.protocol.version", strings.TrimPrefix(r.Proto, "HTTP/")),
		attribute.Int("http.response.status_code", rec.Status),
		attribute.Int64("http.response.body.size", rec.ResponseBytes),
		attribute.String("mesh.direction", d.String()),
		attribute.Bool("mesh.tls", rec.TLS),
	}
	if host, port, err := net.SplitHostPort(r.Host); err == nil {
		n, _ := strconv.Atoi(port)
		attrs = append(attrs, attribute.String("server.address", host), attribute.Int("server.port", n))
	} else {
		attrs = append(attrs, attribute.String("server.address", r.Host))
	}
	peerAddr, peerID := rec.Client, rec.ClientID
	if d == outbound {
		peerAddr, peerID = rec.Upstream, rec.ServerID
	} else {
		attrs = append(attrs, addrAttrs("client.address", "client.port", rec.Client)...)
	}
	attrs = append(attrs, addrAttrs("network.peer.address", "network.peer.port", peerAddr)...)
	for k, v := range map[string]string{"mesh.peer.identity": peerID, "mesh.client.identity": rec.ClientID, "mesh.server.identity": rec.ServerID,
		"mesh.route": rec.Route, "mesh.error": rec.Error, "user_agent.original": rec.UserAgent} {
		if v != "" {
			attrs = append(attrs, attribute.String(k, v))
		}
	}
	if attempts > 1 {
		attrs = append(attrs, attribute.Int("http.request.resend_count", attempts-1), attribute.Int("mesh.attempts", attempts))
	}
	failed := rec.Status >= 500 || rec.Status == 0 || rec.Error != ""
	if rec.GRPCStatus != "" {
		code, _ := strconv.Atoi(rec.GRPCStatus)
		attrs = append(attrs, attribute.String("rpc.system", "grpc"), attribute.Int("rpc.grpc.status_code", code))
		failed = failed || code != 0
	}
	span.SetAttributes(attrs...)
	if failed {
		why := rec.Error
		if why == "" {
			why = "HTTP " + strconv.Itoa(rec.Status)
			if rec.GRPCStatus != "" && rec.GRPCStatus != "0" {
				why = "gRPC status " + rec.GRPCStatus
			}
		}
		span.SetStatus(codes.Error, why)
	}
	span.End()
}

func addrAttrs(addrKey, portKey, hostport string) []attribute.KeyValue {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil
	}
	n, _ := strconv.Atoi(port)
	return []attribute.KeyValue{attribute.String(addrKey, host), attribute.Int(portKey, n)}
}

// shutdown sends what is queued, within ctx.
func (t *tracing) shutdown(ctx context.Context) error { return t.provider.Shutdown(ctx) }

// spanQueue is the tracer's span processor: finished sampled spans wait
// in a bounded queue and go to the exporter in batches from one
// goroutine. A full queue drops the span, a failed export its batch; both
// are counted, and neither makes a request wait.
type spanQueue struct {
	exp      sdktrace.SpanExporter
	ch       chan sdktrace.ReadOnlySpan
	flushes  chan chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
	exported prometheus.Counter
	dropped  *prometheus.CounterVec
}

func newSpanQueue(exp sdktrace.SpanExporter, reg prometheus.Registerer) *spanQueue {
	q := &spanQueue{
		exp: exp, ch: make(chan sdktrace.ReadOnlySpan, traceQueueSize), flushes: make(chan chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{}),
		exported: prometheus.NewCounter(prometheus.CounterOpts{Name: "trace_spans_exported_total", Help: "Spans the trace collector accepted."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "trace_spans_dropped_total",
			Help: "Spans lost: queue_full (the collector was not keeping up), export_failed (it refused them or could not be reached)."}, []string{"reason"}),
	}
	q.dropped.WithLabelValues("queue_full")
	q.dropped.WithLabelValues("export_failed")
	reg.MustRegister(q.exported, q.dropped)
	go q.run()
	return q
}

func (q *spanQueue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd is called for sampled spans only: the sampler never records a
// span it does not sample.
func (q *spanQueue) OnEnd(s sdktrace.ReadOnlySpan) {
	select {
	case q.ch <- s:
	default:
		q.dropped.WithLabelValues("queue_full").Inc()
	}
}

func (q *spanQueue) run() {
	defer close(q.done)
	t := time.NewTicker(traceBatchEvery)
	defer t.Stop()
	batch := make([]sdktrace.ReadOnlySpan, 0, traceBatchSize)
	send := func() {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*traceExportWait)
		err := q.exp.ExportSpans(ctx, batch)
		cancel()
		if err != nil {
			q.dropped.WithLabelValues("export_failed").Add(float64(len(batch)))
		} else {
			q.exported.Add(float64(len(batch)))
		}
		clear(batch)
		batch = batch[:0]
	}
	drain := func() {
		for {
			select {
			case s := <-q.ch:
				if batch = append(batch, s); len(batch) == traceBatchSize {
					send()
				}
			default:
				send()
				return
			}
		}
	}
	for {
		select {
		case s := <-q.ch:
			if batch = append(batch, s); len(batch) == traceBatchSize {
				send()
			}
		case <-t.C:
			send()
		case done := <-q.flushes:
			drain()
			close(done)
		case <-q.stop:
			drain()
			return
		}
	}
}

func (q *spanQueue) ForceFlush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case q.flushes <- done:
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *spanQueue) Shutdown(ctx context.Context) error {
	q.stopOnce.Do(func() { close(q.stop) })
	select {
	case <-q.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return q.exp.Shutdown(ctx)
}
