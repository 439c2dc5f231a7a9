package httpio

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Client sends HTTP/1.1 requests to plain endpoints over pooled
// keep-alive connections, doing the whole exchange on the caller's
// goroutine. net/http's Transport runs a reader and a writer goroutine per
// connection and hands every request and response between them and the
// caller; on a proxy's request path those hand-offs cost more than the
// parsing. Requests it does not handle (protocol upgrades, Expect:
// 100-continue) go to fallback.
type Client struct {
	dial        func(ctx context.Context, addr string) (net.Conn, error)
	idleTimeout time.Duration
	maxConns    int // per endpoint; 0: no bound
	fallback    http.RoundTripper

	mu      sync.Mutex
	hosts   map[string]*h1Host
	janitor *time.Timer // closes expired idle connections while any are idle
	nidle   int
}

// h1Host is one endpoint's pool.
type h1Host struct {
	idle  []*h1Conn     // most recently used last
	users int           // requests using this entry, so that sweep keeps it
	sem   chan struct{} // requests in flight, when maxConns bounds them
}

// h1Conn is one connection to an endpoint.
type h1Conn struct {
	c      net.Conn
	r      headerLimitedReader
	br     *bufio.Reader
	bw     *bufio.Writer
	addr   string
	idleAt time.Time
	reused bool
}

// maxResponseHeaderBytes bounds a response's head, as net/http's does.
const maxResponseHeaderBytes = 1 << 20

// staleAfter is how long a connection may sit idle before the client
// checks, with one non-blocking peek, that the server has not closed it.
// Servers close idle connections after seconds (Node.js after 5), so a
// connection reused sooner needs no check for a request that can be sent
// again if it does fail; any other request checks every time.
const staleAfter = 500 * time.Millisecond

// NewClient returns a client whose connections dial opens (plain TCP to
// apps, TLS between proxies); what it does not serve itself (upgrades,
// Expect: 100-continue) goes to fallback.
func NewClient(dial func(ctx context.Context, addr string) (net.Conn, error), idleTimeout time.Duration, maxConns int, fallback http.RoundTripper) *Client {
	return &Client{dial: dial, idleTimeout: idleTimeout, maxConns: maxConns, fallback: fallback, hosts: map[string]*h1Host{}}
}

// RoundTrip sends one request and reads the head of its response; the
// body is read from the connection as the caller reads it, and the
// connection goes back to the pool at its end.
func (t *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Upgrade") != "" || req.Header.Get("Expect") != "" {
		return t.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	h := t.host(req.URL.Host)
	if h.sem != nil {
		select {
		case h.sem <- struct{}{}:
		case <-ctx.Done():
			t.leave(h, nil, false)
			return nil, ctx.Err()
		}
	}
	resend := resendable(req)
	for {
		pc, err := t.conn(ctx, h, req.URL.Host, !resend)
		if err != nil {
			t.leave(h, nil, true)
			return nil, err
		}
		resp, err := t.exchange(ctx, h, pc, req)
		if err == nil {
			return resp, nil
		}
		if pc.reused && ctx.Err() == nil && retryableOnFresh(req, err) {
			continue // a kept-alive connection the server had closed
		}
		t.leave(h, nil, true)
		return nil, err
	}
}

// retryableOnFresh says whether a request that failed on a reused
// connection may be sent again on a new one: it carries no body, and
// either it never reached the server or sending it twice is harmless.
func retryableOnFresh(req *http.Request, err error) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	var we *writeError
	if errors.As(err, &we) {
		return true
	}
	var ne *noResponseError
	if !errors.As(err, &ne) && !errors.Is(err, syscall.ECONNRESET) {
		return false
	}
	return resendable(req)
}

// resendable says whether sending req twice is harmless and possible: no
// body, and an idempotent method or an idempotency key.
func resendable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// noResponseError is a connection that ended before a response began.
type noResponseError struct{ err error }

func (e *noResponseError) Error() string { return e.err.Error() }
func (e *noResponseError) Unwrap() error { return e.err }

// writeError is a failure to send a request.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// exchange sends req on pc and reads the response head. On error pc is
// closed.
func (t *Client) exchange(ctx context.Context, h *h1Host, pc *h1Conn, req *http.Request) (*http.Response, error) {
	// Cancelling the request (the client went away, a timeout) unblocks
	// whatever the connection is doing.
	stop := context.AfterFunc(ctx, func() { pc.c.SetDeadline(ALongTimeAgo) })
	var wrote chan error
	fail := func(err error) (*http.Response, error) {
		stop()
		if wrote != nil {
			// The writer's error says more than the reader's, if it has one.
			select {
			case werr := <-wrote:
				if werr != nil {
					err = &writeError{werr}
				}
			default:
				pc.c.Close()
				<-wrote
			}
		}
		pc.c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	if hasBody {
		// Write the body while reading the response: a server may answer
		// (and stop reading) before the upload ends.
		wrote = make(chan error, 1)
		go func() { wrote <- pc.write(req) }()
	} else if err := pc.write(req); err != nil {
		return fail(&writeError{err})
	}
	pc.r.limit = maxResponseHeaderBytes
	before := pc.r.total
	var resp *http.Response
	for n := 0; ; n++ {
		var err error
		resp, err = http.ReadResponse(pc.br, req)
		if err != nil {
			if pc.r.total == before && pc.br.Buffered() == 0 {
				err = &noResponseError{err}
			} else if errors.Is(err, errHeaderTooLarge) {
				err = fmt.Errorf("%s sent a response head over %d bytes", pc.addr, maxResponseHeaderBytes)
			}
			return fail(err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// An informational response (103 Early Hints): pass it on.
		if n == 10 {
			return fail(fmt.Errorf("%s sent more than 10 informational responses", pc.addr))
		}
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
		}
	}
	pc.r.limit = -1
	b := &h1Body{rc: resp.Body, ctx: ctx, t: t, h: h, pc: pc, stop: stop, wrote: wrote,
		reuse: !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// write sends req's head and body.
func (pc *h1Conn) write(req *http.Request) error {
	if err := req.Write(pc.bw); err != nil {
		return err
	}
	return pc.bw.Flush()
}

// h1Body is a response body that returns its connection to the pool once
// read to the end.
type h1Body struct {
	rc    io.ReadCloser
	ctx   context.Context
	t     *Client
	h     *h1Host
	pc    *h1Conn
	stop  func() bool
	wrote chan error
	reuse bool
	done  atomic.Bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
		if b.ctx.Err() != nil {
			err = b.ctx.Err() // the deadline that cancelling set
		}
	}
	return n, err
}

// Close before the end closes the connection: what is left of the body
// would have to be read before the next response.
func (b *h1Body) Close() error {
	b.finish(false)
	return nil
}

func (b *h1Body) finish(complete bool) {
	if b.done.Swap(true) {
		return
	}
	// Bytes after the end of the response are a broken server's: the
	// next response would start in the middle of them.
	reuse := complete && b.reuse && b.pc.br.Buffered() == 0 && b.stop()
	if b.wrote != nil {
		select {
		case err := <-b.wrote:
			if err != nil {
				reuse = false
			}
		default:
			// The server answered before reading the whole upload: the
			// connection cannot carry another request.
			reuse = false
			b.pc.c.Close()
			<-b.wrote
		}
	}
	b.stop()
	if !reuse {
		b.pc.c.Close()
		b.t.leave(b.h, nil, true)
		return
	}
	b.t.leave(b.h, b.pc, true)
}

func (t *Client) host(addr string) *h1Host {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.hosts[addr]
	if h == nil {
		h = &h1Host{}
		if t.maxConns > 0 {
			h.sem = make(chan struct{}, t.maxConns)
		}
		t.hosts[addr] = h
	}
	h.users++
	return h
}

// leave ends a request's use of h: pc, when not nil, goes back to the
// pool, and the request's slot under maxConns, when held, is freed.
func (t *Client) leave(h *h1Host, pc *h1Conn, held bool) {
	t.mu.Lock()
	h.users--
	if pc != nil {
		t.putIdleLocked(h, pc)
	}
	t.mu.Unlock()
	if held && h.sem != nil {
		<-h.sem
	}
}

// conn takes the most recently used idle connection that is still open,
// or dials a new one. check says to peek at any idle connection first,
// however briefly it idled.
func (t *Client) conn(ctx context.Context, h *h1Host, addr string, check bool) (*h1Conn, error) {
	now := time.Now()
	for {
		t.mu.Lock()
		n := len(h.idle)
		if n == 0 {
			t.mu.Unlock()
			break
		}
		pc := h.idle[n-1]
		h.idle[n-1] = nil
		h.idle = h.idle[:n-1]
		t.nidle--
		t.mu.Unlock()
		if (!check && now.Sub(pc.idleAt) < staleAfter) || pc.open() {
			pc.reused = true
			return pc, nil
		}
		pc.c.Close()
	}
	c, err := t.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	pc := &h1Conn{c: c, addr: addr, bw: bufio.NewWriterSize(c, 4<<10)}
	pc.r = headerLimitedReader{r: c, limit: -1}
	pc.br = bufio.NewReaderSize(&pc.r, 4<<10)
	return pc, nil
}

// socketOf finds the socket under c's wrappers.
func socketOf(c net.Conn) (syscall.Conn, bool) {
	for c != nil {
		if sc, ok := c.(syscall.Conn); ok {
			return sc, true
		}
		switch v := c.(type) {
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		case interface{ Unwrap() net.Conn }:
			c = v.Unwrap()
		default:
			return nil, false
		}
	}
	return nil, false
}

// open peeks at an idle connection without blocking: a server that closed
// it has sent FIN (read returns 0) or RST; one that sent bytes unasked is
// broken too.
func (pc *h1Conn) open() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	// Over TLS, what the socket holds unasked is a close_notify or an
	// alert: peeking at the socket itself tells as well.
	sc, ok := socketOf(pc.c)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, errno := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = errno == syscall.EAGAIN
		return true // never wait
	})
	return err == nil && alive
}

// putIdleLocked pools pc; t.mu is held.
func (t *Client) putIdleLocked(h *h1Host, pc *h1Conn) {
	pc.idleAt = time.Now()
	if len(h.idle) >= MaxIdlePerEndpoint {
		pc.c.Close()
		return
	}
	h.idle = append(h.idle, pc)
	t.nidle++
	if t.janitor == nil {
		t.janitor = time.AfterFunc(t.idleTimeout, t.sweep)
	}
}

// sweep closes connections idle for longer than the idle timeout, and
// comes back while any stay idle.
func (t *Client) sweep() {
	deadline := time.Now().Add(-t.idleTimeout)
	t.mu.Lock()
	defer t.mu.Unlock()
	for addr, h := range t.hosts {
		keep := h.idle[:0]
		for _, pc := range h.idle {
			if pc.idleAt.Before(deadline) {
				pc.c.Close()
				t.nidle--
			} else {
				keep = append(keep, pc)
			}
		}
		clear(h.idle[len(keep):])
		h.idle = keep
		if len(h.idle) == 0 && h.users == 0 {
			delete(t.hosts, addr)
		}
	}
	if t.nidle > 0 {
		t.janitor.Reset(t.idleTimeout / 2)
	} else {
		t.janitor = nil
	}
}

// CloseIdleConnections closes every idle connection.
func (t *Client) CloseIdleConnections() {
	t.mu.Lock()
	for _, h := range t.hosts {
		for _, pc := range h.idle {
			pc.c.Close()
		}
		clear(h.idle)
		h.idle = h.idle[:0]
	}
	t.nidle = 0
	t.mu.Unlock()
	if c, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

var errHeaderTooLarge = errors.New("response head too large")

// headerLimitedReader reads from a connection, failing once more than
// limit bytes are read while limit is not negative, and counts what it
// read.
type headerLimitedReader struct {
	r     io.Reader
	limit int
	total int64
}

func (l *headerLimitedReader) Read(p []byte) (int, error) {
	if l.limit < 0 {
		n, err := l.r.Read(p)
		l.total += int64(n)
		return n, err
	}
	if l.limit == 0 {
		return 0, errHeaderTooLarge
	}
	if len(p) > l.limit {
		p = p[:l.limit]
	}
	n, err := l.r.Read(p)
	l.limit -= n
	l.total += int64(n)
	return n, err
}
