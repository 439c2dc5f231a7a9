package httpio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// countingConn records the writes that reach it.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
	data   bytes.Buffer
	err    error
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.writes++
	return c.data.Write(p)
}

func (c *countingConn) Close() error                     { return nil }
func (c *countingConn) SetWriteDeadline(time.Time) error { return nil }

func (c *countingConn) snapshot() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, c.data.String()
}

func TestCorkGathersWritesUntilTheWriterGivesWay(t *testing.T) {
	// On a busy machine the flusher's goroutine may run between two writes;
	// hold it back so that the test decides when the writer gives way.
	var scheduled []func()
	defer func(f func(func())) { startFlusher = f }(startFlusher)
	startFlusher = func(flush func()) { scheduled = append(scheduled, flush) }
	under := &countingConn{}
	c := CorkNow(under)
	c.Write([]byte("HEADERS "))
	c.Write([]byte("DATA "))
	c.Write([]byte("END"))
	if n, _ := under.snapshot(); n != 0 {
		t.Fatalf("%d writes before the writer gave way, want 0", n)
	}
	if len(scheduled) != 1 {
		t.Fatalf("%d flushes scheduled for three writes, want 1", len(scheduled))
	}
	scheduled[0]()
	if n, data := under.snapshot(); n != 1 || data != "HEADERS DATA END" {
		t.Fatalf("%d writes of %q, want 1 of the three in order", n, data)
	}
}

func TestCorkWritesLargeWritesThroughInOrder(t *testing.T) {
	under := &countingConn{}
	c := CorkNow(under)
	c.Write([]byte("small|"))
	big := bytes.Repeat([]byte("b"), corkLimit)
	if n, err := c.Write(big); n != len(big) || err != nil {
		t.Fatalf("%d, %v", n, err)
	}
	c.Write([]byte("|after"))
	c.Close()
	_, data := under.snapshot()
	if want := "small|" + string(big) + "|after"; data != want {
		t.Fatalf("got %d bytes out of order", len(data))
	}
}

func TestCorkReportsAFailedFlushToLaterWrites(t *testing.T) {
	broken := errors.New("broken pipe")
	under := &countingConn{err: broken}
	c := CorkNow(under)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err) // taken, not yet sent
	}
	c.flush()
	if _, err := c.Write([]byte("y")); !errors.Is(err, broken) {
		t.Fatalf("err = %v, want the flush's", err)
	}
}

func TestCorkOverARealConnection(t *testing.T) {
	a, b := net.Pipe()
	c := CorkNow(a)
	go func() {
		for range 100 {
			c.Write([]byte("0123456789"))
		}
		c.Close()
	}()
	got, err := io.ReadAll(b)
	if err != nil || len(got) != 1000 {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
}

func TestCorkSendsWhatWaitsBeforeADeadlineOrHalfClose(t *testing.T) {
	a, b := net.Pipe()
	c := CorkNow(a)
	done := make(chan []byte)
	go func() { got, _ := io.ReadAll(b); done <- got }()
	c.Write([]byte("alert"))
	// tls.Conn sends its close_notify and at once sets a deadline in the
	// past: the alert must be on its way before the deadline bites.
	c.SetWriteDeadline(time.Now())
	a.SetWriteDeadline(time.Time{})
	c.Close()
	if got := <-done; string(got) != "alert" {
		t.Fatalf("peer got %q", got)
	}
}

func TestCorkCloseDoesNotHangOnAPeerThatDoesNotRead(t *testing.T) {
	defer func(d time.Duration) { closeFlushTimeout = d }(closeFlushTimeout)
	closeFlushTimeout = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c // and never read from it
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	defer peer.Close()
	c := CorkNow(raw)
	// Fill the socket buffers so that the flusher blocks mid-write.
	chunk := make([]byte, corkLimit)
	filled := make(chan struct{})
	go func() {
		defer close(filled)
		for range 200 {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(closeFlushTimeout + 5*time.Second):
		t.Fatal("Close hung on a peer that does not read")
	}
	<-filled
}
