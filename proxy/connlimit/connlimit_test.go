package connlimit

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// bounded is a bounded loopback listener and what its hooks saw.
type bounded struct {
	l                *Listener
	refused, evicted atomic.Int32
	evictedIdle      atomic.Int32
}

func listen(t *testing.T, max int) *bounded {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &bounded{}
	b.l = New(ln, "test", max, slog.New(slog.DiscardHandler), Hooks{
		Refused: func() { b.refused.Add(1) },
		Evicted: func(wasIdle bool) {
			b.evicted.Add(1)
			if wasIdle {
				b.evictedIdle.Add(1)
			}
		},
	})
	t.Cleanup(func() { ln.Close() })
	return b
}

// connect dials the listener and returns the client side and the server
// side Accept gave, or a nil server side when Accept gave nothing in time
// (the connection was refused).
func (b *bounded) connect(t *testing.T) (client net.Conn, server *Conn) {
	t.Helper()
	client, err := net.Dial("tcp", b.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	got := make(chan net.Conn, 1)
	go func() {
		c, err := b.l.Accept()
		if err == nil {
			got <- c
		}
	}()
	select {
	case c := <-got:
		t.Cleanup(func() { c.Close() })
		return client, c.(*Conn)
	case <-time.After(300 * time.Millisecond):
		// Accept keeps waiting for a connection that gets a place; the
		// listener's close in Cleanup ends it.
		return client, nil
	}
}

// closedByServer reports whether the server side closed c (EOF or reset).
func closedByServer(t *testing.T, c net.Conn) error {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return err
	}
	t.Fatalf("client read %v; want the server to have closed the connection", err)
	return nil
}

func stillOpen(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("client read %v; want the connection still open", err)
	}
}

func TestUnderTheBoundEveryConnectionIsAccepted(t *testing.T) {
	b := listen(t, 3)
	for range 3 {
		if _, s := b.connect(t); s == nil {
			t.Fatal("a connection under the bound was not accepted")
		}
	}
	if b.l.Open() != 3 || b.evicted.Load() != 0 || b.refused.Load() != 0 {
		t.Fatalf("open %d evicted %d refused %d; want 3 0 0", b.l.Open(), b.evicted.Load(), b.refused.Load())
	}
}

func TestAtTheBoundANewConnectionTakesTheOldestFreshOnesPlace(t *testing.T) {
	b := listen(t, 2)
	first, _ := b.connect(t)
	second, _ := b.connect(t)
	third, s := b.connect(t)
	if s == nil {
		t.Fatal("the new connection was refused though fresh connections could give way")
	}
	closedByServer(t, first)
	stillOpen(t, second)
	stillOpen(t, third)
	if b.l.Open() != 2 || b.evicted.Load() != 1 || b.evictedIdle.Load() != 0 {
		t.Fatalf("open %d evicted %d (idle %d); want 2 1 (0)", b.l.Open(), b.evicted.Load(), b.evictedIdle.Load())
	}
}

func TestFreshConnectionsGiveWayBeforeIdleOnes(t *testing.T) {
	b := listen(t, 2)
	idleClient, idleServer := b.connect(t)
	idleServer.Busy()
	idleServer.Idle() // it has served a request and waits for the next
	freshClient, _ := b.connect(t)
	if _, s := b.connect(t); s == nil {
		t.Fatal("refused")
	}
	closedByServer(t, freshClient)
	stillOpen(t, idleClient)
	// With no fresh connection left, the idle one gives way next.
	freshClientTwo, s := b.connect(t)
	s.Busy()
	if _, s := b.connect(t); s == nil {
		t.Fatal("refused though an idle connection could give way")
	}
	closedByServer(t, idleClient)
	stillOpen(t, freshClientTwo)
	// Evicted: the first fresh one, the third (fresh), then the idle one.
	if b.evictedIdle.Load() != 1 || b.evicted.Load() != 3 {
		t.Fatalf("evicted %d (idle %d); want 3 (1)", b.evicted.Load(), b.evictedIdle.Load())
	}
}

func TestWhenEveryPlaceIsBusyTheNewConnectionIsReset(t *testing.T) {
	b := listen(t, 2)
	for range 2 {
		_, s := b.connect(t)
		s.Busy()
	}
	c, s := b.connect(t)
	if s != nil {
		t.Fatal("a connection was accepted past the bound with every place busy")
	}
	if err := closedByServer(t, c); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("the refused client saw %v; want a reset", err)
	}
	if b.refused.Load() != 1 || b.l.Open() != 2 {
		t.Fatalf("refused %d open %d; want 1 2", b.refused.Load(), b.l.Open())
	}
}

func TestClosingGivesThePlaceBackOnce(t *testing.T) {
	b := listen(t, 2)
	_, one := b.connect(t)
	_, two := b.connect(t)
	two.Busy()
	one.Close()
	one.Close()
	if b.l.Open() != 1 {
		t.Fatalf("open %d after closing one of two twice; want 1", b.l.Open())
	}
	// An evicted connection's own close later gives back nothing more.
	_, three := b.connect(t)
	_ = three
	_, four := b.connect(t) // evicts three, the only fresh one
	if four == nil {
		t.Fatal("refused")
	}
	three.Close()
	if b.l.Open() != 2 {
		t.Fatalf("open %d; want 2 (two and four)", b.l.Open())
	}
	if p := b.l.TakePeak(); p != 2 {
		t.Errorf("peak %d; want 2", p)
	}
}

func TestOfFindsThePlaceBeneathWrappers(t *testing.T) {
	b := listen(t, 1)
	_, s := b.connect(t)
	wrapped := tls.Server(wrapper{s}, &tls.Config{})
	if Of(wrapped) != s {
		t.Fatal("Of did not find the bounded connection beneath TLS and a wrapper")
	}
	if Of(&net.TCPConn{}) != nil {
		t.Fatal("Of found a place for a connection from no bounded listener")
	}
	Busy(&net.TCPConn{}) // no place: nothing happens
	var none *Conn
	none.Busy()
	none.Idle()
}

type wrapper struct{ net.Conn }

func (w wrapper) Unwrap() net.Conn { return w.Conn }
