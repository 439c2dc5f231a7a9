package httpio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"
)

// H2Guard stands between an HTTP/2 client and net/http's HTTP/2 server,
// reading what the client sends frame by frame, to refuse what RFC 9113
// says a server must refuse and net/http's does not:
//
//   - a request with a connection-specific header field (Connection,
//     Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade) or a TE
//     other than "trailers" (section 8.2.2): net/http answers it with a
//     400; the guard closes the connection, a connection error the RFC
//     allows in place of the stream error, so the request goes no further;
//   - a SETTINGS frame naming a setting twice (section 6.5.3: processed in
//     order): net/http closes the connection; the guard passes one entry
//     per setting, with the last value, which is what processing in order
//     leaves;
//   - a request whose DATA does not add up to its content-length
//     (section 8.1.1: malformed, and an intermediary must not forward it):
//     net/http refuses it only if it sees the excess before the handler
//     has forwarded and answered the request, a race the proxy lost when
//     slow; the guard counts each stream's DATA as it passes and closes
//     the connection at the first byte too many, or at an end too soon;
//   - a client that resets most of the streams it opens (rapid reset,
//     CVE-2023-44487): net/http bounds the handlers running at once, but
//     when they keep up it starts one for every stream, and the proxy
//     forwards requests the client has already cancelled. Once a
//     connection has opened resetMinStreams streams and reset at least
//     half of them, the guard closes it (Envoy's default for "premature"
//     resets is the same ratio and count).
//
// It decodes header blocks with an HPACK decoder of its own, in step with
// the server's (it sees the same blocks in the same order), and passes
// every byte on unchanged but those SETTINGS frames. DATA and every other
// frame stream through without a copy of their own. A frame larger than
// maxFrame is passed on for the server to refuse, and the guard stops
// looking.
type H2Guard struct {
	net.Conn
	r   io.Reader
	dec *hpack.Decoder

	pending []byte // what is ready to hand to the server
	buf     []byte
	rest    int  // payload bytes of a streamed frame still to pass
	started bool // the preface has passed
	off     bool // stopped looking: everything streams
	bad     string

	// Streams the client opened and reset, for rapid reset.
	lastStream     uint32
	opened, resets int

	// Request bodies with a content-length: what each stream declared and
	// what its DATA has carried so far. header is the stream whose header
	// block is being decoded (0 for trailers).
	bodies map[uint32]*bodyCount
	header uint32

	// lingering is set once the guard refused the connection and drains
	// it before closing.
	lingering atomic.Bool
}

type bodyCount struct{ declared, seen int64 }

// maxTracked bounds the streams whose bodies are counted at once (the
// server allows far fewer in flight).
const maxTracked = 1024

// resetMinStreams is how many streams a connection opens before the
// share it resets counts against it.
const resetMinStreams = 500

// maxFrame is the largest frame the guard reads whole; the proxy's HTTP/2
// servers advertise it as SETTINGS_MAX_FRAME_SIZE.
const maxFrame = 16 << 10

// MaxReadFrameSize is what the proxy's HTTP/2 servers accept: the
// protocol's default, which the guard reads whole.
const MaxReadFrameSize = maxFrame

// ErrH2Refused is what Read returns for a connection the guard closed.
var ErrH2Refused = errors.New("http2: request refused by the proxy")

// NewH2Guard guards c, reading from r (c itself, or a buffer over it).
func NewH2Guard(c net.Conn, r io.Reader) *H2Guard {
	g := &H2Guard{Conn: c, r: r, buf: make([]byte, 0, 9+maxFrame)}
	g.dec = hpack.NewDecoder(4096, g.field)
	g.dec.SetMaxStringLength(maxFrame * 4)
	return g
}

// lingerTime bounds how long a refused connection is drained before it
// is closed.
const lingerTime = time.Second

// lingerClose ends a refused connection: it stops writing (FIN), then
// reads and drops what the client still sends, for a moment, before it
// closes. Closing at once, with the client's frames unread, would reset
// the connection, and the client would see an error of the network's
// instead of the end of the connection.
func (g *H2Guard) lingerClose() {
	CloseWrite(g.Conn)
	g.Conn.SetReadDeadline(time.Now().Add(lingerTime))
	io.Copy(io.Discard, io.LimitReader(g.r, 1<<20))
	g.Conn.Close()
}

// Close closes the connection, unless the guard refused it and closes it
// itself once drained.
func (g *H2Guard) Close() error {
	if g.lingering.Load() {
		return nil
	}
	return g.Conn.Close()
}

// Unwrap is the guarded connection.
func (g *H2Guard) Unwrap() net.Conn { return g.Conn }

// Refused says why the guard closed the connection, or "".
func (g *H2Guard) Refused() string { return g.bad }

func (g *H2Guard) Read(p []byte) (int, error) {
	if g.bad != "" {
		return 0, ErrH2Refused
	}
	if g.off && len(g.pending) == 0 {
		return g.r.Read(p)
	}
	for len(g.pending) == 0 && g.rest == 0 {
		if err := g.next(); err != nil {
			return 0, err
		}
		if g.bad != "" {
			g.lingering.Store(true)
			go g.lingerClose()
			return 0, ErrH2Refused
		}
		if g.off && len(g.pending) == 0 {
			return g.r.Read(p)
		}
	}
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	if len(p) > g.rest {
		p = p[:g.rest]
	}
	n, err := g.r.Read(p)
	g.rest -= n
	return n, err
}

const (
	frameData         = 0x0
	frameHeaders      = 0x1
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
	flagAck        = 0x1
)

// next reads the preface or one frame's header, and the whole frame when
// the guard must look into it.
func (g *H2Guard) next() error {
	if !g.started {
		g.started = true
		g.buf = g.buf[:24]
		if _, err := io.ReadFull(g.r, g.buf); err != nil {
			return err
		}
		g.pending = g.buf
		return nil
	}
	g.buf = g.buf[:9]
	if _, err := io.ReadFull(g.r, g.buf); err != nil {
		return err
	}
	length := int(g.buf[0])<<16 | int(g.buf[1])<<8 | int(g.buf[2])
	typ, flags := g.buf[3], g.buf[4]
	stream := binary.BigEndian.Uint32(g.buf[5:9]) & 0x7fffffff
	switch typ {
	case frameHeaders:
		g.header = 0
		if stream > g.lastStream { // a new stream, not trailers
			g.lastStream = stream
			g.opened++
			g.header = stream
		}
		if flags&flagEndStream != 0 {
			defer g.ended(stream) // once its header block is read
		}
	case frameData:
		if b := g.bodies[stream]; b != nil {
			if flags&flagPadded != 0 {
				delete(g.bodies, stream) // padding is in the length: not counted
			} else if b.seen += int64(length); b.seen > b.declared {
				g.bad = fmt.Sprintf("stream %d sent more DATA than its content-length %d", stream, b.declared)
				return nil
			}
		}
		if flags&flagEndStream != 0 {
			g.ended(stream)
			if g.bad != "" {
				return nil
			}
		}
	case frameRSTStream:
		delete(g.bodies, stream)
		g.resets++
		if g.opened >= resetMinStreams && 2*g.resets >= g.opened {
			g.bad = fmt.Sprintf("rapid reset: the client reset %d of the %d streams it opened", g.resets, g.opened)
			return nil
		}
	}
	inspect := typ == frameHeaders || typ == frameContinuation || (typ == frameSettings && flags&flagAck == 0)
	if !inspect || length > maxFrame {
		g.pending, g.rest = g.buf, length
		g.off = length > maxFrame
		return nil
	}
	g.buf = g.buf[:9+length]
	if _, err := io.ReadFull(g.r, g.buf[9:]); err != nil {
		return err
	}
	g.pending = g.buf
	payload := g.buf[9:]
	switch typ {
	case frameSettings:
		g.pending = dedupeSettings(g.buf)
	case frameHeaders:
		if flags&flagPadded != 0 {
			if len(payload) < 1 || int(payload[0]) >= len(payload) {
				g.off = true // malformed: the server refuses it
				return nil
			}
			payload = payload[1 : len(payload)-int(payload[0])]
		}
		if flags&flagPriority != 0 {
			if len(payload) < 5 {
				g.off = true
				return nil
			}
			payload = payload[5:]
		}
		fallthrough
	case frameContinuation:
		if _, err := g.dec.Write(payload); err != nil {
			g.off = true // the server's decoder fails alike, and says so
			return nil
		}
		if flags&flagEndHeaders != 0 {
			if err := g.dec.Close(); err != nil {
				g.off = true
			}
		}
	}
	return nil
}

// ended checks a stream's body when the client ends the stream.
func (g *H2Guard) ended(stream uint32) {
	if b := g.bodies[stream]; b != nil {
		delete(g.bodies, stream)
		if b.seen != b.declared && g.bad == "" {
			g.bad = fmt.Sprintf("stream %d ended after %d bytes of DATA; its content-length said %d", stream, b.seen, b.declared)
		}
	}
}

// field checks one decoded header field.
func (g *H2Guard) field(f hpack.HeaderField) {
	if g.bad != "" {
		return
	}
	switch strings.ToLower(f.Name) {
	case "content-length":
		n, err := strconv.ParseInt(f.Value, 10, 64)
		if g.header == 0 || err != nil || n < 0 {
			return // the server refuses a bad value itself
		}
		if g.bodies == nil {
			g.bodies = map[uint32]*bodyCount{}
		}
		if len(g.bodies) < maxTracked {
			g.bodies[g.header] = &bodyCount{declared: n}
		}
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		g.bad = "connection-specific header field " + f.Name
	case "te":
		if f.Value != "trailers" {
			g.bad = "TE other than trailers"
		}
	}
}

// dedupeSettings rewrites a SETTINGS frame (header and payload) to name
// each setting once, with its last value, in the order of first naming.
// A frame that names none twice, or whose length is not a multiple of
// six (the server refuses it), is returned as it is.
func dedupeSettings(frame []byte) []byte {
	payload := frame[9:]
	if len(payload)%6 != 0 || len(payload) < 12 {
		return frame
	}
	n := len(payload) / 6
	id := func(i int) uint16 { return binary.BigEndian.Uint16(payload[i*6:]) }
	dup := false
	for i := 0; i < n && !dup; i++ {
		for j := i + 1; j < n; j++ {
			if id(i) == id(j) {
				dup = true
				break
			}
		}
	}
	if !dup {
		return frame
	}
	out := make([]byte, 9, len(frame))
	copy(out, frame[:9])
	for i := 0; i < n; i++ {
		seen := false
		for k := 0; k < i; k++ {
			if id(k) == id(i) {
				seen = true
				break
			}
		}
		if seen {
			continue
		}
		last := i
		for j := i + 1; j < n; j++ {
			if id(j) == id(i) {
				last = j
			}
		}
		out = append(out, payload[i*6:i*6+2]...)
		out = append(out, payload[last*6+2:last*6+6]...)
	}
	l := len(out) - 9
	out[0], out[1], out[2] = byte(l>>16), byte(l>>8), byte(l)
	return out
}
