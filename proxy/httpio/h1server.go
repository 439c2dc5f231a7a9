package httpio

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/meshproj/mesh/proxy/connlimit"
)

// Server serves HTTP/1.x connections from apps and unmeshed clients. It
// does what net/http's server does for a proxy, on one goroutine per
// connection and with buffers kept for the connection's life: net/http's
// server also reads in the background during every request to notice a
// client that leaves, which costs a goroutine hand-off, a system call and
// two deadline changes per request. Here that watch starts only for a
// request still running after clientWatchDelay, so quick requests pay for
// one timer reset instead.
//
// Requests are parsed by net/http (http.ReadRequest), which keeps its
// request-smuggling defences (conflicting Content-Length, Transfer-Encoding
// other than chunked); the checks net/http's server adds on top (Host,
// header names and values, head size) are repeated here.
type Server struct {
	handler           http.Handler
	log               *slog.Logger
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	maxHeaderBytes    int
	// lingerFor bounds how long a closing connection reads what the
	// client still sends after its answer (see serve).
	lingerFor time.Duration
	// described is what requests find under http.ServerContextKey:
	// httputil.ReverseProxy aborts a response whose upstream fails midway
	// (so that the client sees an error, not a short body) only when it
	// finds a server there.
	described *http.Server
	// connState reports a connection's life as http.Server's ConnState
	// does: StateNew, then StateClosed or StateHijacked.
	connState func(net.Conn, http.ConnState)

	mu       sync.Mutex
	conns    map[*serverConn]struct{}
	shutdown bool
	idle     chan struct{} // closed when the last connection ends after shutdown
}

// clientWatchDelay is how long a request runs before the server starts
// watching its connection for the client going away (and then cancels the
// request's context, as net/http's server does).
const clientWatchDelay = 5 * time.Millisecond

// maxPostHandlerRead is how much of a request body the handler left unread
// is drained to keep the connection; beyond it the connection is closed.
const maxPostHandlerRead = 256 << 10

// errHijacked ends the serving loop of a connection taken over by the handler.
var errHijacked = errors.New("connection hijacked")

// ALongTimeAgo is a deadline that has passed: setting it wakes a blocked read.
var ALongTimeAgo = time.Unix(1, 0)

func NewServer(h http.Handler, log *slog.Logger, connState func(net.Conn, http.ConnState), headTimeout, idleTimeout time.Duration) *Server {
	s := &Server{handler: h, log: log, connState: connState, readHeaderTimeout: headTimeout,
		idleTimeout: idleTimeout, maxHeaderBytes: http.DefaultMaxHeaderBytes, lingerFor: 500 * time.Millisecond, conns: map[*serverConn]struct{}{}}
	s.described = &http.Server{Handler: h, ReadHeaderTimeout: s.readHeaderTimeout, IdleTimeout: s.idleTimeout,
		MaxHeaderBytes: s.maxHeaderBytes}
	return s
}

// serverConn is one client connection and the state of its current request.
type serverConn struct {
	s   *Server
	hc  net.Conn
	ctx context.Context // requests' contexts derive from it
	// slot is the connection's place on its listener (nil: none), busy
	// while a request is in flight and idle between requests.
	slot *connlimit.Conn
	addr string // the client's, for Request.RemoteAddr
	// linger: the client may still be sending when the connection closes
	// (a rejected request, a body left unread).
	linger bool
	br     *bufio.Reader
	bw     *bufio.Writer // made at the first answer: a client that never sends a whole request costs none
	src    h1Source

	// mu guards what the client watch shares with the serving goroutine.
	mu        sync.Mutex
	idle      bool // between requests: shutdown may close it
	closing   bool // shutdown asked: close after the current response
	handling  bool // a handler runs
	bodyDone  bool // the request body was read to its end
	watchDue  bool // the watch delay passed while the body was unread
	watching  bool // a watch goroutine reads the connection
	watchDone chan struct{}
	cancel    context.CancelFunc // the current request's
	timer     *time.Timer
}

// writer is the connection's response buffer, made when first needed.
func (c *serverConn) writer() *bufio.Writer {
	if c.bw == nil {
		c.bw = bufio.NewWriterSize(c.hc, 4<<10)
	}
	return c.bw
}

// h1Source is what the connection's bufio.Reader reads: the connection,
// within the head-size limit while a request head is read, after the byte
// the client watch may have read.
type h1Source struct {
	c       *serverConn
	limit   int64 // bytes left; <0: no limit
	hasByte bool
	b       [1]byte
}

func (s *h1Source) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if s.hasByte {
		p[0], s.hasByte = s.b[0], false
		if s.limit > 0 {
			s.limit--
		}
		return 1, nil
	}
	if s.limit == 0 {
		return 0, io.EOF
	}
	if s.limit > 0 && int64(len(p)) > s.limit {
		p = p[:s.limit]
	}
	n, err := s.c.hc.Read(p)
	if s.limit > 0 {
		s.limit -= int64(n)
	}
	return n, err
}

// Serve serves a connection on the calling goroutine until it closes. The
// contexts of its requests derive from ctx, which carries what the caller
// knows of the connection.
func (s *Server) Serve(ctx context.Context, hc net.Conn) {
	ctx = context.WithValue(ctx, http.ServerContextKey, s.described)
	c := &serverConn{s: s, hc: hc, ctx: ctx, slot: connlimit.Of(hc)}
	c.src.c = c
	c.src.limit = -1
	c.addr = hc.RemoteAddr().String()
	if !s.track(c, true) {
		hc.Close()
		return
	}
	s.connState(hc, http.StateNew)
	c.br = bufio.NewReaderSize(&c.src, 4<<10)
	c.timer = time.AfterFunc(time.Hour, c.watchDelayPassed)
	c.timer.Stop()
	err := c.loop()
	c.timer.Stop()
	s.track(c, false)
	if err == errHijacked {
		s.connState(hc, http.StateHijacked)
		return
	}
	if c.linger {
		// Closing with bytes from the client unread resets the connection,
		// which can destroy the answer before the client reads it: close
		// our side for writing and take what else comes for a moment.
		CloseWrite(hc)
		hc.SetReadDeadline(time.Now().Add(s.lingerFor))
		io.CopyN(io.Discard, hc, maxPostHandlerRead)
	}
	hc.Close()
	s.connState(hc, http.StateClosed)
}

// track adds or removes a connection; adding fails once shutdown began.
func (s *Server) track(c *serverConn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shutdown {
			return false
		}
		s.conns[c] = struct{}{}
		return true
	}
	delete(s.conns, c)
	if s.shutdown && len(s.conns) == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
	return true
}

// Shutdown closes idle connections, lets each busy one finish its current
// response (then closes it), and waits for all of them or ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	idle := make(chan struct{})
	if len(s.conns) == 0 {
		close(idle)
	} else {
		s.idle = idle
	}
	for c := range s.conns {
		c.mu.Lock()
		c.closing = true
		if c.idle {
			// Wake the read of the next request; the loop sees closing.
			c.hc.SetReadDeadline(ALongTimeAgo)
		}
		c.mu.Unlock()
	}
	s.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes every connection at once.
func (s *Server) Close() {
	s.mu.Lock()
	s.shutdown = true
	for c := range s.conns {
		c.hc.Close()
	}
	s.mu.Unlock()
}

func (c *serverConn) loop() error {
	s := c.s
	for {
		// Wait for the next request. The idle deadline is set under the
		// lock that Shutdown takes to expire it, so one cannot undo the other.
		waiting := !c.src.hasByte && c.br.Buffered() == 0
		c.mu.Lock()
		c.idle = true
		closing := c.closing
		if waiting && !closing {
			c.hc.SetReadDeadline(time.Now().Add(s.idleTimeout))
		}
		c.mu.Unlock()
		if closing {
			return nil
		}
		if waiting {
			if _, err := c.br.Peek(1); err != nil {
				return err
			}
		}
		// Until its head is whole, a request (the first, or the next on a
		// kept-alive connection) may lose its place to a new connection.
		// A request that arrived as shutdown began is still served; its
		// response says the connection closes.
		c.mu.Lock()
		c.idle = false
		c.mu.Unlock()
		c.hc.SetReadDeadline(time.Now().Add(s.readHeaderTimeout))
		c.src.limit = int64(s.maxHeaderBytes) + 4096 - int64(c.br.Buffered())
		req, err := http.ReadRequest(c.br)
		hitLimit := c.src.limit == 0
		c.src.limit = -1
		if err != nil {
			c.badRequest(err, hitLimit)
			return err
		}
		c.hc.SetReadDeadline(time.Time{})
		c.slot.Busy()
		if err := checkRequest(req); err != nil {
			c.reject(http.StatusBadRequest, err.Error(), req.Method == http.MethodHead)
			return err
		}
		if err := c.serveRequest(req); err != nil {
			return err
		}
		c.slot.Idle()
	}
}

// checkRequest repeats what net/http's server checks beyond the parser.
func checkRequest(req *http.Request) error {
	if req.ProtoMajor != 1 {
		return fmt.Errorf("unsupported protocol version %s", req.Proto)
	}
	if req.Host == "" && req.ProtoMinor >= 1 && req.Method != http.MethodConnect {
		return errors.New("missing required Host header")
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return errors.New("malformed Host header")
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return errors.New("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return errors.New("invalid header value")
			}
		}
	}
	return nil
}

// badRequest answers a request that could not be parsed, when the client
// sent something (a closed or timed-out idle connection gets nothing).
func (c *serverConn) badRequest(err error, hitLimit bool) {
	var ne net.Error
	switch {
	case hitLimit:
		c.reject(http.StatusRequestHeaderFieldsTooLarge, "request head too large", false)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
	case errors.As(err, &ne) && ne.Timeout():
	case errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded):
	case strings.Contains(err.Error(), "unsupported transfer encoding") || strings.Contains(err.Error(), "too many transfer encodings"):
		c.reject(http.StatusNotImplemented, "unsupported transfer encoding", false)
	default:
		c.reject(http.StatusBadRequest, oneLine(err.Error()), false)
	}
}

// reject answers a request the server will not hand to the handler, and the
// connection closes after it. An answer to HEAD has no body.
func (c *serverConn) reject(status int, msg string, head bool) {
	c.linger = true
	c.hc.SetWriteDeadline(time.Now().Add(time.Second))
	body := fmt.Sprintf("%d %s: %s\n", status, http.StatusText(status), msg)
	fmt.Fprintf(c.writer(), "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		status, http.StatusText(status), len(body))
	if !head {
		c.writer().WriteString(body)
	}
	c.writer().Flush()
}

// serveRequest runs the handler for one request and finishes its response.
// A nil error means the connection can take another request.
func (c *serverConn) serveRequest(req *http.Request) (err error) {
	ctx, cancel := context.WithCancel(c.ctx)
	req = req.WithContext(ctx)
	req.RemoteAddr = c.addr
	w := &h1Response{c: c, req: req, status: http.StatusOK, contentLength: -1,
		expectContinue: req.ProtoAtLeast(1, 1) && strings.EqualFold(req.Header.Get("Expect"), "100-continue")}
	w.header = make(http.Header, 8)
	var body *h1RequestBody // nil: the request has none (req.Body is http.NoBody)
	if req.ContentLength != 0 || isChunked(req) {
		body = &h1RequestBody{w: w, r: req.Body}
		req.Body = body
	}
	c.mu.Lock()
	c.handling, c.bodyDone, c.watchDue, c.cancel = true, body == nil, false, cancel
	c.mu.Unlock()
	c.timer.Reset(clientWatchDelay)

	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.s.log.Error("HTTP handler panicked", slog.Any("panic", v), slog.String("stack", string(buf)))
			}
			c.stopWatch()
			cancel()
			err = errors.New("handler aborted")
		}
	}()
	c.s.handler.ServeHTTP(w, req)
	if w.hijacked {
		cancel()
		return errHijacked
	}
	c.stopWatch()
	keep := w.finish()
	if body != nil && !body.finish() {
		keep, c.linger = false, true
	}
	cancel()
	if !keep {
		return errors.New("connection closes after this response")
	}
	return nil
}

func isChunked(req *http.Request) bool {
	return len(req.TransferEncoding) > 0 && req.TransferEncoding[0] == "chunked"
}

// watchDelayPassed runs when a request has taken clientWatchDelay.
func (c *serverConn) watchDelayPassed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.handling {
		return
	}
	if !c.bodyDone {
		// The body reader starts the watch when the body ends.
		c.watchDue = true
		return
	}
	c.startWatchLocked()
}

// bodyEnded is called when the request body has been read to its end.
func (c *serverConn) bodyEnded() {
	c.mu.Lock()
	c.bodyDone = true
	if c.watchDue && c.handling {
		c.startWatchLocked()
	}
	c.mu.Unlock()
}

func (c *serverConn) startWatchLocked() {
	if c.watching || c.br.Buffered() > 0 || c.src.hasByte {
		// Already watching, or the next request is here: the client stays.
		return
	}
	c.watching = true
	c.watchDone = make(chan struct{})
	go c.watch(c.cancel, c.watchDone)
}

// watch reads the connection while a request runs: the client sending
// nothing more is normal, the connection closing means nobody waits for
// the answer, and a byte is the start of the next request (kept).
func (c *serverConn) watch(cancel context.CancelFunc, done chan struct{}) {
	defer close(done)
	n, err := c.hc.Read(c.src.b[:])
	if n == 1 {
		c.src.hasByte = true
		return
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		cancel()
	}
}

// stopWatch ends the handler phase: a running watch is woken and waited for.
func (c *serverConn) stopWatch() {
	c.timer.Stop()
	c.mu.Lock()
	c.handling = false
	watching, done := c.watching, c.watchDone
	c.watching = false
	c.mu.Unlock()
	if watching {
		c.hc.SetReadDeadline(ALongTimeAgo)
		<-done
		c.hc.SetReadDeadline(time.Time{})
	}
}

// h1RequestBody is a request body as the handler sees it: it sends "100
// Continue" when first read if the client asked for it, notices the body's
// end, and stops reading the connection once the handler is done.
type h1RequestBody struct {
	w         *h1Response
	r         io.ReadCloser
	mu        sync.Mutex
	eof       bool
	closed    bool
	continued bool // the first read offered "100 Continue"
}

func (b *h1RequestBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.eof {
		return 0, io.EOF
	}
	if !b.continued {
		b.continued = true
		b.w.sendContinue()
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof = true
		b.w.c.bodyEnded()
	}
	return n, err
}

func (b *h1RequestBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// finish drains what the handler left of the body so that the connection
// can carry the next request. false: the connection must close.
func (b *h1RequestBody) finish() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.eof {
		return true
	}
	if b.w.continuePending() {
		// The client still waits for permission to send the body.
		return false
	}
	n, err := io.CopyN(io.Discard, b.r, maxPostHandlerRead+1)
	return err == io.EOF && n <= maxPostHandlerRead
}

// h1Response is the http.ResponseWriter of one request. The head waits
// until the first body byte, a flush or the handler's end, so that a
// response without a body or length gets "Content-Length: 0" rather than
// chunked framing.
type h1Response struct {
	c              *serverConn
	req            *http.Request
	header         http.Header
	status         int
	wroteHeader    bool // WriteHeader was called (or implied)
	wroteHead      bool // the head is in the buffer
	contentLength  int64
	written        int64
	chunked        bool
	noBody         bool
	closeAfter     bool
	expectContinue bool // 100-continue asked and not yet sent
	hijacked       bool
	trailers       []string // announced in the Trailer header
	err            error
	mu             sync.Mutex // serialises "100 Continue" with the response
}

func (w *h1Response) Header() http.Header { return w.header }

func (w *h1Response) WriteHeader(code int) {
	if w.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.informational(code)
		return
	}
	w.wroteHeader, w.status = true, code
}

// informational sends a 1xx response at once.
func (w *h1Response) informational(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if code == http.StatusContinue {
		if !w.expectContinue {
			return
		}
		w.expectContinue = false
	}
	bw := w.c.writer()
	writeStatusLine(bw, code)
	writeHeaderFields(bw, w.header, nil)
	bw.WriteString("\r\n")
	w.setErr(bw.Flush())
}

// sendContinue answers "Expect: 100-continue" when the body is first read.
func (w *h1Response) sendContinue() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.expectContinue || w.wroteHead {
		return
	}
	w.expectContinue = false
	w.c.writer().WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	w.setErr(w.c.writer().Flush())
}

func (w *h1Response) continuePending() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.expectContinue
}

func (w *h1Response) setErr(err error) {
	if err != nil && w.err == nil {
		w.err = err
	}
}

// writeHead frames the response and buffers its head. hasBody: the handler
// has written body bytes (or flushed, and more may follow).
func (w *h1Response) writeHead(hasBody bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wroteHead = true
	h := w.header
	req := w.req
	w.noBody = req.Method == http.MethodHead || w.status == http.StatusNoContent ||
		w.status == http.StatusNotModified || w.status < 200
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.contentLength = n
		} else {
			h.Del("Content-Length")
		}
	}
	for _, v := range h["Trailer"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(name))
			}
		}
	}
	h.Del("Transfer-Encoding")
	switch {
	case w.noBody:
		if w.status == http.StatusNoContent || w.status < 200 {
			h.Del("Content-Length")
		}
	case w.contentLength >= 0 && len(w.trailers) == 0:
	case !hasBody && len(w.trailers) == 0:
		w.contentLength = 0
		h["Content-Length"] = []string{"0"}
	case req.ProtoAtLeast(1, 1):
		w.chunked = true
		h.Del("Content-Length")
		w.contentLength = -1
		h["Transfer-Encoding"] = []string{"chunked"}
	default:
		// An HTTP/1.0 client learns the end of the body from the close.
		w.closeAfter = true
	}
	if httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		w.closeAfter = true
	}
	c := w.c
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	// req.Close: "Connection: close", or HTTP/1.0 without keep-alive.
	if req.Close || closing || w.closeAfter || w.status == http.StatusSwitchingProtocols {
		w.closeAfter = true
		if w.status != http.StatusSwitchingProtocols {
			h["Connection"] = []string{"close"}
		}
	} else if !req.ProtoAtLeast(1, 1) {
		h["Connection"] = []string{"keep-alive"}
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{httpDate()}
	}
	writeStatusLine(c.writer(), w.status)
	writeHeaderFields(c.writer(), h, w.trailers)
	c.writer().WriteString("\r\n")
}

func (w *h1Response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.wroteHead {
		w.writeHead(len(p) > 0)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	bw := w.c.writer()
	if w.chunked {
		bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		bw.WriteString("\r\n")
		bw.Write(p)
		_, err := bw.WriteString("\r\n")
		w.setErr(err)
		return len(p), w.err
	}
	n, err := bw.Write(p)
	w.setErr(err)
	return n, err
}

// FlushError sends what is buffered (http.ResponseController uses it).
func (w *h1Response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.wroteHead {
		w.writeHead(true)
	}
	w.setErr(w.c.writer().Flush())
	return w.err
}

// Flush implements http.Flusher.
func (w *h1Response) Flush() { w.FlushError() }

// Hijack hands the connection to the handler (protocol upgrades).
func (w *h1Response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.wroteHead {
		return nil, nil, errors.New("hijack after the response head")
	}
	w.c.stopWatch()
	w.hijacked = true
	c := w.c
	// The buffers go with the connection: give it copies of what they hold.
	br := bufio.NewReader(io.MultiReader(bytesReader(c.br), c.hc))
	if c.src.hasByte {
		br = bufio.NewReader(io.MultiReader(bytesReader(c.br), strings.NewReader(string(c.src.b[:])), c.hc))
	}
	return c.hc, bufio.NewReadWriter(br, bufio.NewWriter(c.hc)), nil
}

// bytesReader returns what br buffers, as a reader of its own.
func bytesReader(br *bufio.Reader) io.Reader {
	b, _ := br.Peek(br.Buffered())
	return strings.NewReader(string(b))
}

// finish completes the response after the handler returned. false: the
// connection must close.
func (w *h1Response) finish() bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.wroteHead {
		w.writeHead(false)
	}
	bw := w.c.writer()
	if w.chunked {
		bw.WriteString("0\r\n")
		for _, name := range w.trailers {
			for _, v := range w.header[name] {
				writeField(bw, name, v)
			}
		}
		for k, vv := range w.header {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				for _, v := range vv {
					writeField(bw, name, v)
				}
			}
		}
		bw.WriteString("\r\n")
	}
	w.setErr(bw.Flush())
	truncated := !w.noBody && w.contentLength >= 0 && w.written < w.contentLength
	return w.err == nil && !w.closeAfter && !truncated
}

func writeStatusLine(bw *bufio.Writer, code int) {
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(StatusText(code))
	bw.WriteByte(' ')
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	bw.WriteString(text)
	bw.WriteString("\r\n")
}

// writeHeaderFields writes a header section, leaving out trailers and
// fields no HTTP/1 peer may receive.
func writeHeaderFields(bw *bufio.Writer, h http.Header, trailers []string) {
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || slices.Contains(trailers, k) {
			continue
		}
		for _, v := range vv {
			writeField(bw, k, v)
		}
	}
}

// writeField writes one field; a name that is not a token is dropped and
// line breaks in a value become spaces, so a field can never split.
func writeField(bw *bufio.Writer, name, value string) {
	if !httpguts.ValidHeaderFieldName(name) {
		return
	}
	bw.WriteString(name)
	bw.WriteString(": ")
	if strings.ContainsAny(value, "\r\n") {
		value = strings.NewReplacer("\r", " ", "\n", " ").Replace(value)
	}
	bw.WriteString(strings.TrimSpace(value))
	bw.WriteString("\r\n")
}

// httpDate is the Date header value, formatted once a second.
func httpDate() string {
	now := time.Now().Unix()
	if d := cachedDate.Load(); d != nil && d.unix == now {
		return d.text
	}
	d := &dateText{unix: now, text: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	cachedDate.Store(d)
	return d.text
}

type dateText struct {
	unix int64
	text string
}

var cachedDate atomic.Pointer[dateText]
