package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Attacks on the proxy's HTTP/2 side, each from a raw client that writes
// frames as an attacker would, against a real proxy process whose app
// counts what reaches it. Every loop is bounded in count and in time.

// countingApp is an h2c app that counts the requests it sees and the
// most it has had in flight at once.
type countingApp struct {
	addr                 string
	hits, inflight, most atomic.Int64
}

func startCountingApp(t *testing.T) *countingApp {
	t.Helper()
	a := &countingApp{}
	a.addr = startH2CServer(t, func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		n := a.inflight.Add(1)
		for m := a.most.Load(); n > m && !a.most.CompareAndSwap(m, n); m = a.most.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		a.inflight.Add(-1)
		io.WriteString(w, "ok")
	})
	return a
}

// h2Attacker is a raw HTTP/2 client connection to the proxy.
type h2Attacker struct {
	c   net.Conn
	w   *bufio.Writer
	fr  *http2.Framer
	hb  bytes.Buffer
	enc *hpack.Encoder
}

func dialH2(t *testing.T, addr string) *h2Attacker {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	a := &h2Attacker{c: c, w: bufio.NewWriterSize(c, 64<<10)}
	a.fr = http2.NewFramer(a.w, c)
	a.enc = hpack.NewEncoder(&a.hb)
	a.w.WriteString(http2.ClientPreface)
	a.fr.WriteSettings()
	return a
}

func (a *h2Attacker) headers(kv ...string) []byte {
	a.hb.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		a.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), a.hb.Bytes()...)
}

// closedByPeer reads until the proxy ends the connection (GOAWAY or EOF)
// or within passes; it reports which.
func (a *h2Attacker) closedByPeer(within time.Duration) (string, bool) {
	a.c.SetReadDeadline(time.Now().Add(within))
	for {
		f, err := a.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return "still open", false
			}
			return "closed: " + err.Error(), true
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			return "GOAWAY " + ga.ErrCode.String(), true
		}
	}
}

// rssKB is a process's resident memory.
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			var kb int
			fmt.Sscan(strings.TrimPrefix(line, "VmRSS:"), &kb)
			return kb
		}
	}
	return 0
}

func stillServes(t *testing.T, mp *meshProxy) {
	t.Helper()
	resp, _, err := newClient(mp.outbound).get("web", "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the attack a plain request got %v %v", resp, err)
	}
}

// CVE-2023-44487: streams opened and reset at once cost the client
// nothing; the proxy must not turn each into work for the app.
func TestRapidResetDoesNotFloodTheApp(t *testing.T) {
	app := startCountingApp(t)
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", "", app.addr))})
	a := dialH2(t, mp.outbound)
	req := []string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "web"}
	const streams = 20000
	deadline := time.Now().Add(10 * time.Second)
	sent := 0
	for id := uint32(1); sent < streams && time.Now().Before(deadline); id += 2 {
		a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: a.headers(req...), EndStream: true, EndHeaders: true})
		a.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		sent++
		if sent%500 == 0 {
			if err := a.w.Flush(); err != nil {
				break // the proxy closed the connection: what it should do
			}
		}
	}
	a.w.Flush()
	how, _ := a.closedByPeer(3 * time.Second)
	time.Sleep(200 * time.Millisecond)
	t.Logf("sent %d streams opened and reset; the app saw %d requests, at most %d at once; the connection: %s",
		sent, app.hits.Load(), app.most.Load(), how)
	if most := app.most.Load(); most > 250 {
		t.Errorf("the app had %d of the attacker's requests in flight at once; want no more than the proxy's stream limit", most)
	}
	if hits := app.hits.Load(); hits > int64(sent)/4 {
		t.Errorf("%d of %d reset streams reached the app", hits, sent)
	}
	stillServes(t, mp)
}

// CVE-2024-27316 and kin: a header block that never ends (CONTINUATION
// after CONTINUATION) or one over the size limit must end the connection
// without the proxy holding it: what the attacker manages to write
// includes what the kernel's socket buffers take, so the proxy's memory
// is what is checked.
func TestEndlessOrOversizedHeaderBlocksEndTheConnection(t *testing.T) {
	app := startCountingApp(t)
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", "", app.addr))})
	before := rssKB(t, mp.cmd.Process.Pid)
	for _, endless := range []bool{true, false} {
		a := dialH2(t, mp.outbound)
		first := a.headers(":method", "GET", ":scheme", "http", ":path", "/", ":authority", "web")
		a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first})
		// Valid fields, 8 KiB a frame, up to 16 MiB or 10 s.
		field := a.headers("x-fill", strings.Repeat("a", 8000))
		deadline := time.Now().Add(10 * time.Second)
		sent := 0
		var werr error
		for sent < 16<<20 && time.Now().Before(deadline) && werr == nil {
			last := !endless && sent >= 2<<20
			werr = a.fr.WriteContinuation(1, last, field)
			sent += len(field)
			if werr == nil {
				werr = a.w.Flush()
			}
			if last {
				break
			}
		}
		how, closed := a.closedByPeer(5 * time.Second)
		t.Logf("endless=%v: wrote %d KiB of header block (write error: %v); the connection: %s", endless, sent>>10, werr, how)
		if !closed {
			t.Errorf("endless=%v: the connection is still open after %d KiB of one header block", endless, sent>>10)
		}
	}
	if app.hits.Load() != 0 {
		t.Errorf("the app saw %d requests; want none", app.hits.Load())
	}
	if grew := rssKB(t, mp.cmd.Process.Pid) - before; grew > 32<<10 {
		t.Errorf("the proxy grew by %d KiB", grew)
	}
	stillServes(t, mp)
}

// CVE-2022-41721 was a server that buffered an h2c upgrade's request
// body without bound. The proxy does not upgrade to h2c: such a request
// is an HTTP/1.1 request, streamed to the app, never held whole.
func TestH2CUpgradeBodiesAreNotBuffered(t *testing.T) {
	var got atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got.Store(n)
		io.WriteString(w, "ok")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	mp := startProxy(t, proxyOpts{discovery: discoveryFile(service("web", 80, "", "", ln.Addr().String()))})
	before := rssKB(t, mp.cmd.Process.Pid)
	const size = 64 << 20
	c, err := net.DialTimeout("tcp", mp.outbound, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: web\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: %d\r\n\r\n", size)
	chunk := make([]byte, 1<<20)
	var peak int
	for sent := 0; sent < size; sent += len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			break // refused: fine, as long as it was not buffered
		}
		if sent%(8<<20) == 0 {
			peak = max(peak, rssKB(t, mp.cmd.Process.Pid))
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		resp.Body.Close()
	}
	peak = max(peak, rssKB(t, mp.cmd.Process.Pid))
	t.Logf("response %v (err %v); the app read %d MiB; the proxy's RSS %d KiB before, %d KiB at most during", statusOf(resp), err, got.Load()>>20, before, peak)
	if resp != nil && resp.StatusCode == http.StatusSwitchingProtocols {
		t.Error("the proxy switched to h2c")
	}
	if peak-before > 32<<10 {
		t.Errorf("the proxy grew by %d KiB while a %d MiB upgrade body went through: buffered", peak-before, size>>20)
	}
}

func statusOf(resp *http.Response) string {
	if resp == nil {
		return "none"
	}
	return resp.Status
}
