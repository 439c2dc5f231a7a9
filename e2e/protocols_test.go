package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// testService is a gRPC server with unary and server-streaming calls.
type testService struct {
	testpb.UnimplementedTestServiceServer
	name string
	hang bool // never answer unary calls
}

func (s *testService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if s.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if req.GetResponseStatus().GetCode() != 0 {
		return nil, status.Error(codes.Code(req.ResponseStatus.Code), req.ResponseStatus.Message)
	}
	grpc.SetTrailer(ctx, metadata.Pairs("served-by", s.name))
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, req.GetResponseSize())}, Hostname: s.name}, nil
}

func (s *testService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	for _, p := range req.GetResponseParameters() {
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	stream.SetTrailer(metadata.Pairs("messages", fmt.Sprint(len(req.GetResponseParameters()))))
	return nil
}

func startGRPCBackend(t *testing.T, name string) string {
	t.Helper()
	return startGRPCServer(t, &testService{name: name})
}

func startGRPCServer(t *testing.T, svc *testService) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testpb.RegisterTestServiceServer(s, svc)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

// dialGRPC connects a gRPC client to a proxy's outbound listener, naming
// the service in :authority.
func dialGRPC(t *testing.T, proxyAddr, authority string) testpb.TestServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+proxyAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testpb.NewTestServiceClient(conn)
}

// wsEcho is a WebSocket handler that answers each message with prefix+message.
func wsEcho(prefix string) http.HandlerFunc {
	up := websocket.Upgrader{}
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, append([]byte(prefix), msg...))
		}
	}
}

func TestGRPCUnaryAndServerStreamingThroughProxy(t *testing.T) {
	a, b := startGRPCBackend(t, "a"), startGRPCBackend(t, "b")
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("greeter", 50051, "round-robin", "", a, b))})
	c := dialGRPC(t, mp.outbound, "greeter:50051")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	seen := map[string]bool{}
	for range 4 {
		var trailer metadata.MD
		resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 1000}, grpc.Trailer(&trailer))
		if err != nil {
			t.Fatalf("unary call: %v", err)
		}
		if len(resp.GetPayload().GetBody()) != 1000 {
			t.Fatalf("payload of %d bytes, want 1000", len(resp.GetPayload().GetBody()))
		}
		if got := trailer.Get("served-by"); len(got) != 1 || got[0] != resp.Hostname {
			t.Fatalf("trailer served-by = %v, want %s", got, resp.Hostname)
		}
		seen[resp.Hostname] = true
	}
	if len(seen) != 2 {
		t.Errorf("unary calls reached %v, want both backends (balanced per request on one connection)", seen)
	}

	_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
	if s, _ := status.FromError(err); s.Code() != codes.NotFound || s.Message() != "no such thing" {
		t.Errorf("error status through the proxy = %v, want NotFound: no such thing", err)
	}

	var params []*testpb.ResponseParameters
	for i := range 50 {
		params = append(params, &testpb.ResponseParameters{Size: int32(100 + i)})
	}
	stream, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream after %d messages: %v", n, err)
		}
		if len(msg.GetPayload().GetBody()) != 100+n {
			t.Fatalf("message %d has %d bytes", n, len(msg.GetPayload().GetBody()))
		}
		n++
	}
	if n != 50 || stream.Trailer().Get("messages")[0] != "50" {
		t.Errorf("got %d messages, trailer %v; want 50", n, stream.Trailer())
	}
	if m := mp.metrics(t); !has(m, "response_total", "authority", "greeter:50051", "classification", "failure") {
		t.Errorf("the NotFound call is not counted as a failure:\n%s", grep(m, "response_total"))
	}
}

func TestGRPCClientGetsUnavailableWhenServiceHasNoEndpoints(t *testing.T) {
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("greeter", 50051, "", ""))})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := dialGRPC(t, mp.outbound, "greeter:50051").UnaryCall(ctx, &testpb.SimpleRequest{})
	if s, _ := status.FromError(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "no endpoints") {
		t.Fatalf("call to a service with no endpoints = %v, want Unavailable naming the cause", err)
	}
}

func TestWebSocketEchoThroughProxy(t *testing.T) {
	be := startBackend(t, "ws")
	be.handler = wsEcho("echo: ")
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("chat", 80, "", "", be.addr))})
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+mp.outbound+"/socket", http.Header{"Host": {"chat"}})
	if err != nil {
		t.Fatalf("dial through proxy: %v (%v)", err, resp)
	}
	defer c.Close()
	for i := range 10 {
		msg := fmt.Sprintf("message %d", i)
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil || string(got) != "echo: "+msg {
			t.Fatalf("read %q, %v; want %q", got, err, "echo: "+msg)
		}
	}
}

// startTCPEcho runs an echo server that answers "echo:" and then every
// byte it reads, and closes its side once the client has closed writing.
func startTCPEcho(t *testing.T) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		c.Write([]byte("echo:"))
		io.Copy(c, c)
	})
}

func TestOpaqueTCPEchoThroughOutboundPort(t *testing.T) {
	echo := startTCPEcho(t)
	local := freeAddr(t)
	mp := startProxy(t, proxyOpts{
		discovery: discoveryFile(service("echo", 7, "", "    opaque: true\n", echo)),
		args:      []string{"--outbound-tcp", local + "=echo:7"},
	})
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := strings.Repeat("0123456789", 10000)
	go func() {
		c.Write([]byte(payload))
		c.(*net.TCPConn).CloseWrite() // half-close: the answer must still arrive
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "echo:"+payload {
		t.Fatalf("read %d bytes (%v); want %d", len(got), err, len(payload)+5)
	}
	waitFor(t, "TCP metrics", func() bool {
		n, _ := metricSum(mp.metrics(t), "tcp_close_total", "authority", "echo:7", "direction", "outbound", "target_addr", echo, "tls", "false")
		return n == 1
	})
}

func TestInboundForwardsHTTPAndOpaqueTCPToTheApp(t *testing.T) {
	app := startBackend(t, "app")
	mp := startProxy(t, proxyOpts{discovery: "services: []\n", args: []string{"--inbound-forward", app.addr}})
	resp, body, err := newClient(mp.inbound).get("app.default:8080", "/inbound")
	if err != nil || resp.StatusCode != 200 || body != "hello from app\n" {
		t.Fatalf("inbound HTTP: %v %q %v", resp, body, err)
	}
	if r := app.lastRequest(); r.Host != "app.default:8080" || r.URL.Path != "/inbound" {
		t.Errorf("app saw Host %q path %q", r.Host, r.URL.Path)
	}
	if m := mp.metrics(t); !has(m, "request_total", "authority", "app.default:8080", "direction", "inbound", "target_addr", app.addr, "tls", "false") {
		t.Errorf("inbound request not counted:\n%s", grep(m, "request_total"))
	}

	// A client that speaks neither HTTP nor TLS is proxied as opaque TCP.
	echo := startTCPEcho(t)
	tp := startProxy(t, proxyOpts{discovery: "services: []\n", args: []string{"--inbound-forward", echo}})
	c, err := net.Dial("tcp", tp.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("\x00\x01binary protocol"))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "echo:\x00\x01binary protocol" {
		t.Fatalf("inbound opaque TCP: read %q, %v", got, err)
	}
}

// startGreeter runs a server-speaks-first server on loopback: it sends
// greeting to each client before reading anything, then closes. The
// test's cleanup stops it.
func startGreeter(t *testing.T, greeting string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(greeting))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestOpaquePortSkipsDetectionForServerSpeaksFirstProtocols(t *testing.T) {
	// An SMTP-like server: it greets before the client says anything.
	addr := startGreeter(t, "220 mail ready\r\n")
	_, port, _ := net.SplitHostPort(addr)
	// A detect timeout far longer than the test's patience proves that the
	// greeting did not wait for detection.
	mp := startProxy(t, proxyOpts{discovery: "services: []\n",
		args: []string{"--inbound-forward", addr, "--opaque-ports", port, "--detect-timeout", "30s"}})
	c, err := net.Dial("tcp", mp.inbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "220 mail ready\r\n" {
		t.Fatalf("greeting %q, %v", line, err)
	}
}

func TestForwardProxyAbsoluteURIAndHopByHopHeaders(t *testing.T) {
	be := startBackend(t, "web")
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", "", be.addr))})
	proxyURL, _ := url.Parse("http://" + mp.outbound)
	// HTTP_PROXY style: the client sends absolute-form request targets.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	req, _ := http.NewRequest("GET", "http://web/path?q=1", nil)
	req.Header.Set("Connection", "X-Secret")
	req.Header.Set("X-Secret", "for the proxy only")
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-App", "kept")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Backend") != "web" {
		t.Fatalf("absolute-form request: %v", resp.Status)
	}
	r := be.lastRequest()
	switch {
	case r.URL.RequestURI() != "/path?q=1":
		t.Errorf("backend got request target %q, want origin form /path?q=1", r.RequestURI)
	case r.Header.Get("X-Secret") != "":
		t.Errorf("header named in Connection was forwarded")
	case r.Header.Get("X-App") != "kept" || r.Header.Get("X-Forwarded-For") != "203.0.113.7":
		t.Errorf("end-to-end headers changed: %v", r.Header)
	case r.Host != "web":
		t.Errorf("backend saw Host %q", r.Host)
	}
}

func TestBadTrafficGetsClearAnswersAndNeverCrashesTheProxy(t *testing.T) {
	be := startBackend(t, "web")
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(
		service("web", 80, "", "", be.addr),
		service("empty", 80, "", ""),
		service("dead", 80, "", "", freeAddr(t)),
	)})
	cl := newClient(mp.outbound)
	cases := []struct {
		authority  string
		status     int
		errContain string
	}{
		{"nowhere", 503, "unknown service nowhere:80"},
		{"web:8080", 503, "service web has no port 8080 (it has 80)"},
		{"empty", 503, "service empty:80 has no endpoints"},
		{"dead", 502, "connecting to"},
		{"web:99999", 400, "bad port"},
	}
	for _, c := range cases {
		start := time.Now()
		resp, _, err := cl.get(c.authority, "/")
		if err != nil {
			t.Fatalf("%s: %v", c.authority, err)
		}
		if resp.StatusCode != c.status || !strings.Contains(resp.Header.Get("mesh-error"), c.errContain) {
			t.Errorf("%s: %d mesh-error %q; want %d containing %q", c.authority, resp.StatusCode, resp.Header.Get("mesh-error"), c.status, c.errContain)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: answer took %s; it should be fast", c.authority, d)
		}
	}

	// Malformed HTTP gets a 400 from the proxy itself.
	raw := func(payload string) string {
		c, err := net.Dial("tcp", mp.outbound)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte(payload))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	}
	if got := raw("GET / HTTP/1.1\r\nHost: web\r\nno colon here\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400") {
		t.Errorf("malformed header: got %q, want a 400", firstLine(got))
	}
	if got := raw("GET / HTTP/1.1\r\nHost: web\r\nContent-Length: -5\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400") {
		t.Errorf("negative content length: got %q, want a 400", firstLine(got))
	}
	// Binary garbage on the outbound port has no destination: closed.
	if got := raw("\x00\x01\x02garbage"); got != "" {
		t.Errorf("garbage got an answer: %q", got)
	}
	// Still healthy.
	if resp, _, err := cl.get("web", "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("proxy unhealthy after bad traffic: %v %v", resp, err)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

func grep(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitForWithin(t, 10*time.Second, what, cond)
}

// waitForWithin is waitFor with its own time limit.
func waitForWithin(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
