package detect

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Protocol
		more bool
	}{
		{"empty", "", Opaque, true},
		{"get", "GET / HTTP/1.1\r\n", HTTP1, false},
		{"get decided by method", "GET ", HTTP1, false},
		{"partial method", "GE", Opaque, true},
		{"post", "POST /x HTTP/1.0\r\n", HTTP1, false},
		{"custom method full line", "PROPFIND /dav HTTP/1.1\r\n", HTTP1, false},
		{"custom method waits for line", "PROPFIND /dav HT", Opaque, true},
		{"custom method not http", "HELO example.com\r\n", Opaque, false},
		{"http 0.9 style", "FOO /\r\n", Opaque, false},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HTTP2, false},
		{"h2 partial preface", "PRI * HTTP/2.0\r\n", Opaque, true},
		{"tls", "\x16\x03\x01\x02\x00", TLS, false},
		{"tls partial", "\x16\x03", Opaque, true},
		{"not tls", "\x16\x09\x01", Opaque, false},
		{"binary", "\x00\x01\x02", Opaque, false},
		{"redis inline", "PING\r\n", Opaque, false},
		{"leading space", " GET / HTTP/1.1\r\n", Opaque, false},
		{"lowercase method is a token", "get / HTTP/1.1\r\n", HTTP1, false},
		{"wrong version", "BREW /pot HTTP/9.9\r\n", Opaque, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, more := Classify([]byte(tt.in))
			if p != tt.want || more != tt.more {
				t.Errorf("Classify(%q) = %v, more=%v; want %v, more=%v", tt.in, p, more, tt.want, tt.more)
			}
		})
	}
}

func TestPeekReplaysBytes(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	msg := "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
	go func() { client.Write([]byte(msg)) }()
	p, c, err := Peek(server, time.Second)
	if err != nil || p != HTTP1 {
		t.Fatalf("Peek = %v, %v", p, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("read %q, %v; want %q", got, err, msg)
	}
}

func TestPeekQuietClientIsOpaque(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	start := time.Now()
	p, c, err := Peek(server, 50*time.Millisecond)
	if err != nil || p != Opaque {
		t.Fatalf("Peek = %v, %v; want opaque", p, err)
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatal("Peek returned before its timeout")
	}
	// The deadline is cleared: the connection is still usable.
	go func() { client.Write([]byte("220 smtp ready")) }()
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, []byte("220")) {
		t.Fatalf("read after quiet peek: %q, %v", buf, err)
	}
}

func TestPeekShortOpaqueThenClose(t *testing.T) {
	client, server := net.Pipe()
	go func() { client.Write([]byte("GE")); client.Close() }()
	p, c, err := Peek(server, time.Second)
	if err != nil || p != Opaque {
		t.Fatalf("Peek = %v, %v", p, err)
	}
	got, _ := io.ReadAll(c)
	if string(got) != "GE" {
		t.Fatalf("replayed %q, want %q", got, "GE")
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"GET / HTTP/1.1\r\n", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "\x16\x03\x01", "PROPFIND / HTTP/1.1\r\n", "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, more := Classify(b)
		if more && p != Opaque {
			t.Fatalf("undecided but protocol %v", p)
		}
		if more && len(b) >= PeekSize {
			t.Fatalf("asks for more after %d bytes", len(b))
		}
		// A decision never changes as more bytes arrive.
		if !more {
			p2, more2 := Classify(append(b[:len(b):len(b)], 'x'))
			if p2 != p || more2 {
				t.Fatalf("Classify(%q)=%v but with one more byte %v (more=%v)", b, p, p2, more2)
			}
		}
	})
}
