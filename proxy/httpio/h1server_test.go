package httpio

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// startH1Server serves h on a loopback listener with the proxy's own
// HTTP/1 server and returns its address.
func startH1Server(t testing.TB, h http.HandlerFunc) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	states := map[http.ConnState]int{}
	s := NewServer(h, slog.New(slog.DiscardHandler), func(_ net.Conn, st http.ConnState) {
		mu.Lock()
		states[st]++
		mu.Unlock()
	}, 30*time.Second, 90*time.Second)
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.Serve(context.Background(), c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if states[http.StateNew] != states[http.StateClosed]+states[http.StateHijacked] {
			t.Errorf("connection states: %v; every new connection must end", states)
		}
	})
	return s, ln.Addr().String()
}

// exchange sends raw bytes and reads until the server closes or 5 s pass.
func exchange(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// readResponses parses n responses from what a connection received.
func readResponses(t *testing.T, raw string, methods ...string) []*http.Response {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(raw))
	var out []*http.Response
	for i, method := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("response %d: %v\nreceived:\n%s", i, err, raw)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("response %d body: %v\nreceived:\n%s", i, err, raw)
		}
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		resp.Header.Set("X-Test-Body", string(body))
		out = append(out, resp)
	}
	if rest, _ := io.ReadAll(br); len(rest) > 0 {
		t.Errorf("bytes after %d responses: %q", len(methods), rest)
	}
	return out
}

func echoPath(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	switch r.URL.Path {
	case "/chunked":
		w.Write([]byte("part1"))
		w.(http.Flusher).Flush()
		w.Write([]byte("part2"))
	case "/empty":
		w.WriteHeader(http.StatusAccepted)
	case "/nocontent":
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Content-Length", fmt.Sprint(len(r.URL.Path)+len(body)))
		w.Write([]byte(r.URL.Path))
		w.Write(body)
	}
}

func TestH1ServerPipelinedRequestsGetFramedAnswersInOrder(t *testing.T) {
	_, addr := startH1Server(t, echoPath)
	raw := exchange(t, addr, "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"+
		"POST /two HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
		"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n"+
		"GET /empty HTTP/1.1\r\nHost: a\r\n\r\n"+
		"GET /nocontent HTTP/1.1\r\nHost: a\r\n\r\n"+
		"HEAD /head HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	got := readResponses(t, raw, "GET", "GET", "GET", "GET", "GET", "HEAD")
	want := []struct {
		status int
		body   string
		te     bool
		length int64
	}{
		{200, "/one", false, 4},
		{200, "/twoabc", false, 7},
		{200, "part1part2", true, -1},
		{202, "", false, 0},
		{204, "", false, 0},
		{200, "", false, 5}, // HEAD: no body, the length of what GET would send
	}
	for i, w := range want {
		r := got[i]
		if r.StatusCode != w.status || r.Header.Get("X-Test-Body") != w.body || (len(r.TransferEncoding) > 0) != w.te || !w.te && r.ContentLength != w.length {
			t.Errorf("response %d: %d %q te=%v length=%d; want %+v", i, r.StatusCode, r.Header.Get("X-Test-Body"), r.TransferEncoding, r.ContentLength, w)
		}
		if r.Header.Get("Date") == "" {
			t.Errorf("response %d has no Date", i)
		}
	}
	if !strings.Contains(raw, "Connection: close") {
		t.Error("the last response does not say the connection closes")
	}
}

func TestH1ServerSendsTrailersAfterAChunkedBody(t *testing.T) {
	_, addr := startH1Server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(200)
		w.Write([]byte("data"))
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"Late", "yes")
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "data" || resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("Late") != "yes" {
		t.Errorf("body %q trailers %v", body, resp.Trailer)
	}
	if resp.Header.Get("Grpc-Status") != "" {
		t.Error("a trailer leaked into the head")
	}
}

func TestH1ServerAnswersExpectContinueWhenTheBodyIsRead(t *testing.T) {
	_, addr := startH1Server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q, %v; want 100 Continue before the body is sent", line, err)
	}
	br.ReadString('\n')
	io.WriteString(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "hello" {
		t.Errorf("body %q", b)
	}

	// Refused without reading: no 100, and the connection closes, since
	// the client may still send the body.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c2, "POST /refuse HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	raw, err := io.ReadAll(c2)
	if err != nil || !strings.HasPrefix(string(raw), "HTTP/1.1 401") || strings.Contains(string(raw), "100 Continue") {
		t.Errorf("refused: %q, %v; want a 401 and the connection closed", raw, err)
	}
}

func TestH1ServerCancelsTheRequestWhenTheClientLeaves(t *testing.T) {
	canceled := make(chan error, 1)
	started := make(chan struct{})
	_, addr := startH1Server(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			canceled <- r.Context().Err()
		case <-time.After(10 * time.Second):
			canceled <- nil
		}
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	<-started
	time.Sleep(2 * clientWatchDelay)
	c.Close()
	if err := <-canceled; err != context.Canceled {
		t.Errorf("handler's context: %v; want canceled once the client left", err)
	}
}

func TestH1ServerKeepsAPipelinedRequestTheWatchRead(t *testing.T) {
	_, addr := startH1Server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(10 * clientWatchDelay)
		}
		if r.Context().Err() != nil {
			t.Errorf("%s canceled", r.URL.Path)
		}
		w.Write([]byte(r.Method + " " + r.URL.Path))
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(3 * clientWatchDelay) // the watch is reading by now
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	raw, _ := io.ReadAll(c)
	got := readResponses(t, string(raw), "GET", "GET")
	if got[0].Header.Get("X-Test-Body") != "GET /slow" || got[1].Header.Get("X-Test-Body") != "GET /next" {
		t.Errorf("got %q and %q", got[0].Header.Get("X-Test-Body"), got[1].Header.Get("X-Test-Body"))
	}
}

func TestH1ServerRejectsBadRequestsWithClearStatuses(t *testing.T) {
	_, addr := startH1Server(t, echoPath)
	cases := []struct{ name, raw, status string }{
		{"malformed header", "GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", "HTTP/1.1 400"},
		{"missing Host", "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400"},
		{"bad Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "HTTP/1.1 400"},
		{"negative length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", "HTTP/1.1 400"},
		{"conflicting lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "HTTP/1.1 400"},
		{"unknown coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "HTTP/1.1 501"},
		{"huge head", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("x", http.DefaultMaxHeaderBytes+8192) + "\r\n\r\n", "HTTP/1.1 431"},
		{"HTTP/2 version", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", "HTTP/1.1 400"},
	}
	for _, c := range cases {
		if got := exchange(t, addr, c.raw); !strings.HasPrefix(got, c.status) || !strings.Contains(got, "Connection: close") {
			t.Errorf("%s: got %q, want %s and a close", c.name, firstLineOf(got), c.status)
		}
	}
}

func TestH1ServerRejectsWithAnAnswerTheClientCanRead(t *testing.T) {
	s, addr := startH1Server(t, echoPath)
	s.lingerFor = time.Minute // the client's end must come from the half-close, not the linger
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// A broken head followed by more bytes that the server never reads.
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n"+strings.Repeat("x", 64<<10))
	raw, err := io.ReadAll(c)
	if err != nil || !strings.HasPrefix(string(raw), "HTTP/1.1 400") {
		t.Errorf("got %q, %v; want the 400 and then the end of the connection", firstLineOf(string(raw)), err)
	}
}

func TestH1ServerDiscardsABodyWrittenForHEAD(t *testing.T) {
	werr := make(chan error, 1)
	_, addr := startH1Server(t, func(w http.ResponseWriter, r *http.Request) {
		_, err := w.Write([]byte("not sent"))
		werr <- err
	})
	raw := exchange(t, addr, "HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	if err := <-werr; err != nil || strings.Contains(raw, "not sent") {
		t.Errorf("write for HEAD: %v, answer %q; want it accepted and discarded", err, raw)
	}
}

func TestH1ServerChunkedBodyWinsOverContentLength(t *testing.T) {
	// A request with both framings is read as chunked (RFC 9112 6.3), so
	// nothing after its body can pass as a request of its own.
	var mu sync.Mutex
	var paths []string
	_, addr := startH1Server(t, func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
	})
	exchange(t, addr, "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"0\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(paths, ",") != "/a,/b" {
		t.Errorf("served %v; want /a then /b", paths)
	}
}

func TestH1ServerHTTP10ClosesUnlessKeptAlive(t *testing.T) {
	_, addr := startH1Server(t, echoPath)
	raw := exchange(t, addr, "GET /x HTTP/1.0\r\n\r\nGET /never HTTP/1.0\r\n\r\n")
	if strings.Count(raw, "HTTP/1.1 200") != 1 || !strings.HasSuffix(raw, "/x") {
		t.Errorf("HTTP/1.0: %q", raw)
	}
	// Kept alive, a response of unknown length ends the connection.
	raw = exchange(t, addr, "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if !strings.Contains(raw, "Connection: keep-alive") || !strings.HasSuffix(raw, "part1part2") || strings.Contains(raw, "chunked") {
		t.Errorf("HTTP/1.0 keep-alive: %q", raw)
	}
}

func TestH1ServerShutdownClosesIdleAndFinishesBusyConnections(t *testing.T) {
	release := make(chan struct{})
	s, addr := startH1Server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/busy" {
			<-release
		}
		w.Write([]byte("done"))
	})
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	idleR := bufio.NewReader(idle)
	resp, err := http.ReadResponse(idleR, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(busy, "GET /busy HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(50 * time.Millisecond)

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idleR.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection: read %d, %v; want it closed", n, err)
	}
	select {
	case <-shut:
		t.Fatal("shutdown returned with a request in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err = http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatalf("busy request lost: %v", err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "done" || !resp.Close {
		t.Errorf("busy request: %q, close=%v; want its answer and a close", b, resp.Close)
	}
	if err := <-shut; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func TestH1ServerHijackKeepsBytesTheServerHadRead(t *testing.T) {
	_, addr := startH1Server(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo:" + line)
		brw.Flush()
	})
	raw := exchange(t, addr, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nearly bytes\n")
	if !strings.HasPrefix(raw, "HTTP/1.1 101") || !strings.HasSuffix(raw, "echo:early bytes\n") {
		t.Errorf("got %q", raw)
	}
}

func TestH1ServerAbortedHandlerClosesTheConnection(t *testing.T) {
	_, addr := startH1Server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	})
	raw := exchange(t, addr, "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
	if strings.Count(raw, "HTTP/1.1 200") != 1 || !strings.HasSuffix(raw, "partial") {
		t.Errorf("got %q; want one truncated response, then the close", raw)
	}
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// FuzzH1Server sends arbitrary bytes as a client would and checks that
// whatever comes back is a clean sequence of HTTP/1.1 responses, one per
// request served, and that the server lets go of the connection.
func FuzzH1Server(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HEAD /chunked HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
	} {
		f.Add(seed)
	}
	var served sync.Map
	_, addr := startH1Server(f, func(w http.ResponseWriter, r *http.Request) {
		served.Store(r.Method+" "+r.URL.Path, true)
		echoPath(w, r)
	})
	f.Fuzz(func(t *testing.T, in string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, in)
		c.(*net.TCPConn).CloseWrite()
		raw, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("the server kept the connection: %v", err)
		}
		// Which request each answer is for: HEAD answers have no body.
		var methods []string
		for rr := bufio.NewReader(strings.NewReader(in)); ; {
			req, err := http.ReadRequest(rr)
			if err != nil {
				break
			}
			methods = append(methods, req.Method)
			io.Copy(io.Discard, req.Body)
		}
		br := bufio.NewReader(strings.NewReader(string(raw)))
		for i := 0; ; {
			if _, err := br.Peek(1); err == io.EOF {
				return
			}
			line, _ := br.Peek(16)
			req := &http.Request{Method: http.MethodGet}
			if i < len(methods) {
				req.Method = methods[i]
			}
			resp, err := http.ReadResponse(br, req)
			if err != nil {
				t.Fatalf("unparseable answer at %q: %v\nsent %q\nreceived %q", line, err, in, raw)
			}
			if resp.StatusCode == http.StatusContinue {
				continue
			}
			i++
			if _, err := io.Copy(io.Discard, resp.Body); err != nil && !resp.Close {
				t.Fatalf("answer body: %v\nsent %q\nreceived %q", err, in, raw)
			}
		}
	})
}
