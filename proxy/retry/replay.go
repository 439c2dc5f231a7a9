package retry

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// ErrReplaced is returned to an attempt that reads its body after a newer
// attempt took over.
var ErrReplaced = errors.New("request body taken over by a retry")

// Body lets a request body be sent more than once. Each attempt reads
// through its own reader: the bytes already read are replayed from memory,
// then reading continues from the client. Nothing is read ahead, so a
// client that streams (gRPC, chunked uploads) is never held up; only when
// the body grows past the limit is replay given up.
type Body struct {
	src   io.ReadCloser
	limit int

	readMu sync.Mutex // one read from src at a time
	mu     sync.Mutex
	buf    []byte
	over   bool  // more than limit read: no replay
	end    error // io.EOF or the client's error, once seen
	gen    atomic.Int64
}

// NewBody wraps a request body, keeping up to limit bytes for replay.
func NewBody(src io.ReadCloser, limit int) *Body {
	return &Body{src: src, limit: limit}
}

// Replayable reports whether a new attempt can still send the whole body.
func (b *Body) Replayable() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.over
}

// Attempt returns the reader for a new attempt; readers of earlier
// attempts stop with ErrReplaced.
func (b *Body) Attempt() io.ReadCloser {
	return &attempt{b: b, gen: b.gen.Add(1)}
}

// Close closes the client's body.
func (b *Body) Close() error { return b.src.Close() }

type attempt struct {
	b   *Body
	gen int64
	off int
}

func (a *attempt) Read(p []byte) (int, error) {
	b := a.b
	if b.gen.Load() != a.gen {
		return 0, ErrReplaced
	}
	b.mu.Lock()
	if a.off < len(b.buf) {
		n := copy(p, b.buf[a.off:])
		a.off += n
		b.mu.Unlock()
		return n, nil
	}
	if b.end != nil {
		err := b.end
		b.mu.Unlock()
		return 0, err
	}
	b.mu.Unlock()

	b.readMu.Lock()
	defer b.readMu.Unlock()
	b.mu.Lock()
	if a.off < len(b.buf) || b.end != nil { // another attempt read meanwhile
		b.mu.Unlock()
		return a.Read(p)
	}
	b.mu.Unlock()
	n, err := b.src.Read(p)
	b.mu.Lock()
	if !b.over {
		if len(b.buf)+n <= b.limit {
			b.buf = append(b.buf, p[:n]...)
			a.off += n
		} else {
			b.over, b.buf = true, nil
		}
	}
	if err != nil {
		b.end = err
	}
	b.mu.Unlock()
	if b.gen.Load() != a.gen {
		// Kept for the newer attempt (or replay was given up); either way
		// these bytes are no longer this attempt's to send.
		return 0, ErrReplaced
	}
	return n, err
}

// Close does not close the client's body: a retry may still need it.
func (a *attempt) Close() error { return nil }
