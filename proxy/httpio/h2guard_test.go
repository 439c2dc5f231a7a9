package httpio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientBytes is what an HTTP/2 client sends: the preface, then frames
// written by build.
func clientBytes(t testing.TB, build func(fr *http2.Framer, enc func(...string) []byte)) []byte {
	t.Helper()
	var out bytes.Buffer
	out.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&out, nil)
	var hb bytes.Buffer
	e := hpack.NewEncoder(&hb)
	enc := func(kv ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			e.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return append([]byte(nil), hb.Bytes()...)
	}
	build(fr, enc)
	return out.Bytes()
}

// guarded reads everything the server would read through a guard.
func guarded(in []byte) ([]byte, *H2Guard, error) {
	c1, c2 := net.Pipe()
	defer c2.Close()
	g := NewH2Guard(c1, bytes.NewReader(in))
	out, err := io.ReadAll(g)
	return out, g, err
}

var request = []string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "web"}

func TestH2GuardPassesAValidConversationUnchanged(t *testing.T) {
	in := clientBytes(t, func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(append(request, "te", "trailers")...), EndHeaders: true})
		fr.WriteData(1, false, bytes.Repeat([]byte("x"), 40000)[:16000])
		fr.WriteData(1, true, []byte("end"))
		// A header block split over CONTINUATION, padded and prioritized.
		block := enc(append(request, "x-long", string(bytes.Repeat([]byte("y"), 300)))...)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block[:10], PadLength: 5,
			Priority: http2.PriorityParam{StreamDep: 1, Weight: 3}})
		fr.WriteContinuation(3, true, block[10:])
		fr.WriteRSTStream(3, http2.ErrCodeCancel)
		fr.WriteGoAway(3, http2.ErrCodeNo, nil)
	})
	out, g, err := guarded(in)
	if err != nil || g.Refused() != "" {
		t.Fatalf("read: %v, refused %q", err, g.Refused())
	}
	if !bytes.Equal(out, in) {
		t.Fatalf("the guard changed a valid conversation (%d bytes in, %d out)", len(in), len(out))
	}
}

func TestH2GuardRefusesConnectionSpecificHeadersAndTE(t *testing.T) {
	for _, kv := range [][]string{
		{"connection", "keep-alive"}, {"keep-alive", "5"}, {"proxy-connection", "close"},
		{"transfer-encoding", "chunked"}, {"upgrade", "websocket"}, {"te", "gzip"},
	} {
		in := clientBytes(t, func(fr *http2.Framer, enc func(...string) []byte) {
			fr.WriteSettings()
			block := enc(append(request, kv...)...)
			// The field may arrive in a CONTINUATION frame.
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:3]})
			fr.WriteContinuation(1, true, block[3:])
		})
		out, g, err := guarded(in)
		if !errors.Is(err, ErrH2Refused) || g.Refused() == "" {
			t.Errorf("%s: %s: read %v, refused %q; want the connection refused", kv[0], kv[1], err, g.Refused())
		}
		if bytes.Contains(out, in[len(in)-10:]) {
			t.Errorf("%s: the end of the bad header block reached the server", kv[0])
		}
	}
}

func TestH2GuardKeepsTheLastValueOfASettingNamedTwice(t *testing.T) {
	in := clientBytes(t, func(fr *http2.Framer, _ func(...string) []byte) {
		fr.WriteSettings(
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: 20000},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1},
		)
	})
	out, _, err := guarded(in)
	if err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(nil, bytes.NewReader(out[len(http2.ClientPreface):]))
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatalf("the rewritten SETTINGS frame does not parse: %v", err)
	}
	sf := f.(*http2.SettingsFrame)
	var got []http2.Setting
	sf.ForeachSetting(func(s http2.Setting) error { got = append(got, s); return nil })
	want := []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: 1}, {ID: http2.SettingMaxFrameSize, Val: 20000}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("settings %v; want %v", got, want)
	}
}

func TestH2GuardPassesAFrameLargerThanItReadsForTheServerToRefuse(t *testing.T) {
	in := clientBytes(t, func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteSettings()
		big := enc(append(request, "x-big", string(bytes.Repeat([]byte("z"), maxFrame)))...)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: big, EndHeaders: true})
	})
	out, _, err := guarded(in)
	if err != nil || !bytes.Equal(out, in) {
		t.Fatalf("read %v; an oversized frame must pass as it is (%d bytes in, %d out)", err, len(in), len(out))
	}
}

// FuzzH2Guard feeds the guard arbitrary client bytes: it must never
// panic, and whatever it passes on is what came in unless it rewrote a
// SETTINGS frame or refused the connection.
func FuzzH2Guard(f *testing.F) {
	f.Add(clientBytes(f, func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(request...), EndHeaders: true})
		fr.WriteData(1, true, []byte("body"))
	}))
	f.Add(clientBytes(f, func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(append(request, "te", "x")...), PadLength: 3, EndHeaders: true})
	}))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, g, err := guarded(in)
		if err == nil && g.Refused() == "" && len(out) > len(in) {
			t.Fatalf("passed on %d bytes of %d", len(out), len(in))
		}
	})
}

func TestH2GuardClosesAConnectionThatResetsMostOfItsStreams(t *testing.T) {
	conversation := func(streams int, resetEvery int) []byte {
		return clientBytes(t, func(fr *http2.Framer, enc func(...string) []byte) {
			fr.WriteSettings()
			for i := 0; i < streams; i++ {
				id := uint32(2*i + 1)
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: enc(request...), EndStream: true, EndHeaders: true})
				if i%resetEvery == 0 {
					fr.WriteRSTStream(id, http2.ErrCodeCancel)
				}
			}
		})
	}
	// Every stream reset: refused once 500 streams have been opened.
	in := conversation(2000, 1)
	out, g, err := guarded(in)
	if !errors.Is(err, ErrH2Refused) || !strings.Contains(g.Refused(), "rapid reset: the client reset 500 of the 500 streams") {
		t.Errorf("a rapid reset: read %v, refused %q", err, g.Refused())
	}
	if len(out) > len(in)/3 {
		t.Errorf("%d of the attack's %d bytes reached the server", len(out), len(in))
	}
	// A client that cancels one call in three keeps its connection.
	in = conversation(2000, 3)
	if out, g, err := guarded(in); err != nil || g.Refused() != "" || !bytes.Equal(out, in) {
		t.Errorf("a third of the streams reset: read %v, refused %q", err, g.Refused())
	}
}

func TestH2GuardRefusesABodyThatDoesNotMatchItsContentLength(t *testing.T) {
	for _, c := range []struct {
		name string
		data []string // DATA frames; the last ends the stream
		ok   bool
	}{
		{"exact, in two frames", []string{"ab", "c"}, true},
		{"too much", []string{"abcd"}, false},
		{"too much, spread", []string{"ab", "cd"}, false},
		{"too little", []string{"a"}, false},
	} {
		in := clientBytes(t, func(fr *http2.Framer, enc func(...string) []byte) {
			fr.WriteSettings()
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(append(request, "content-length", "3")...), EndHeaders: true})
			for i, d := range c.data {
				fr.WriteData(1, i == len(c.data)-1, []byte(d))
			}
		})
		out, g, err := guarded(in)
		switch {
		case c.ok && (err != nil || g.Refused() != "" || !bytes.Equal(out, in)):
			t.Errorf("%s: read %v, refused %q; want it passed unchanged", c.name, err, g.Refused())
		case !c.ok && (!errors.Is(err, ErrH2Refused) || !strings.Contains(g.Refused(), "content-length")):
			t.Errorf("%s: read %v, refused %q; want the connection refused", c.name, err, g.Refused())
		}
	}
	// A header block that ends the stream but declares a body.
	in := clientBytes(t, func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteSettings()
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(append(request, "content-length", "5")...), EndHeaders: true, EndStream: true})
	})
	if _, g, err := guarded(in); !errors.Is(err, ErrH2Refused) || !strings.Contains(g.Refused(), "ended after 0 bytes") {
		t.Errorf("a declared body that never came: read %v, refused %q", err, g.Refused())
	}
}

// A refused connection ends with the end of the stream, not a reset, even
// though the client has sent frames the server never read: the guard
// drains them before it closes.
func TestH2GuardEndsARefusedConnectionWithoutAReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		g := NewH2Guard(c, c)
		_, err = io.ReadAll(g)
		g.Close() // as the server does when its reader fails
		served <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(clientBytes(t, func(fr *http2.Framer, enc func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: enc(append(request, "content-length", "1")...), EndHeaders: true})
		fr.WriteData(1, false, []byte("too much"))
		for range 50 { // what the client sends on, which the server never reads
			fr.WriteData(1, false, bytes.Repeat([]byte("z"), 1000))
		}
	}))
	if err := <-served; !errors.Is(err, ErrH2Refused) {
		t.Fatalf("server read: %v, want the guard's refusal", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the client saw %v, want the end of the connection", err)
	}
}
