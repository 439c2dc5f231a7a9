package detect

import (
	"crypto/tls"
	"net"
	"slices"
	"testing"
	"time"
)

// clientHello captures the first bytes a real TLS client sends.
func clientHello(t testing.TB, alpn []string) []byte {
	t.Helper()
	client, server := net.Pipe()
	go func() {
		tls.Client(client, &tls.Config{NextProtos: alpn, InsecureSkipVerify: true}).Handshake()
		client.Close()
	}()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := server.Read(buf)
		out = append(out, buf[:n]...)
		if _, more := ClientHelloALPN(out); !more || err != nil {
			break
		}
	}
	server.Close()
	return out
}

func TestClientHelloALPNFromRealClient(t *testing.T) {
	hello := clientHello(t, []string{"h2", "mesh"})
	protos, more := ClientHelloALPN(hello)
	if more || !slices.Equal(protos, []string{"h2", "mesh"}) {
		t.Fatalf("ALPN = %v (more=%v)", protos, more)
	}
	if _, more := ClientHelloALPN(hello[:len(hello)-1]); !more {
		t.Fatal("a truncated record did not ask for more")
	}
	if protos, _ := ClientHelloALPN(clientHello(t, nil)); len(protos) != 0 {
		t.Fatalf("no ALPN offered, got %v", protos)
	}
}

func FuzzClientHelloALPN(f *testing.F) {
	f.Add(clientHello(f, []string{"h2", "mesh"}))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		protos, more := ClientHelloALPN(b)
		if more && len(protos) > 0 {
			t.Fatal("protocols reported from an incomplete record")
		}
		for _, p := range protos {
			if p == "" {
				t.Fatal("empty protocol name")
			}
		}
	})
}
