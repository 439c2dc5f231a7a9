// Package connlimit bounds how many connections a listener holds, so that
// clients who open connections and then say nothing (or say a request head
// a byte at a time) cannot grow the proxy until it is killed.
//
// Each accepted connection takes one of the listener's places. A connection
// is fresh until it has carried a whole request (or become a tunnel), busy
// while a request is in flight, and idle between requests. When every place
// is taken, a new connection takes the place of the oldest fresh one, else
// of the oldest idle one: a slow client loses its place to a client that
// is about to be served, and a fast client is never fresh long enough to be
// the oldest. Only when every place is busy is the new connection refused
// (reset at once, counted).
//
// It does not time connections out; the servers above it do (detection,
// request head, idle keep-alive). It does not look at bytes either.
package connlimit

import (
	"container/list"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// state is where a connection stands.
type state uint8

const (
	fresh state = iota // has not finished a request yet
	busy               // a request, a tunnel or a TCP stream is in flight
	idle               // between requests
	gone               // closed, or evicted
)

// Hooks are told what the listener decided; each may be nil.
type Hooks struct {
	// Refused: a new connection found every place busy and was reset.
	Refused func()
	// Evicted: a connection that was fresh or idle gave up its place.
	Evicted func(wasIdle bool)
}

// Listener accepts connections within a bound. It is a net.Listener whose
// Accept returns *Conn.
type Listener struct {
	net.Listener
	name  string
	max   int
	hooks Hooks
	log   *slog.Logger

	mu          sync.Mutex
	open        int
	peak        int // most open since TakePeak
	fresh, idle list.List
	lastWarn    time.Time
	refused     int // since lastWarn
}

// New bounds ln to bound connections at once (less than 1 means 1). name is the
// listener's, for logs.
func New(ln net.Listener, name string, bound int, log *slog.Logger, hooks Hooks) *Listener {
	if log == nil {
		log = slog.Default()
	}
	return &Listener{Listener: ln, name: name, max: max(bound, 1), hooks: hooks, log: log}
}

// Name is the listener's name.
func (l *Listener) Name() string { return l.name }

// Max is the bound.
func (l *Listener) Max() int { return l.max }

// Open is how many connections hold a place now.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// TakePeak returns the most connections open at once since the last call,
// and starts counting again from now.
func (l *Listener) TakePeak() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.peak
	l.peak = l.open
	return p
}

// Accept waits for a connection that gets a place.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c := l.admit(raw); c != nil {
			return c, nil
		}
	}
}

// admit gives raw a place, evicting a fresh or idle connection when full;
// nil: every place is busy and raw has been reset.
func (l *Listener) admit(raw net.Conn) *Conn {
	c := &Conn{Conn: raw, l: l}
	l.mu.Lock()
	var victim *Conn
	if l.open >= l.max {
		victim = l.oldest()
		if victim == nil {
			l.refused++
			warn := time.Since(l.lastWarn) >= 10*time.Second
			n := l.refused
			if warn {
				l.lastWarn, l.refused = time.Now(), 0
			}
			l.mu.Unlock()
			if warn {
				l.log.Warn("listener has every place busy; refusing new connections",
					slog.String("listener", l.name), slog.Int("max_connections", l.max), slog.Int("refused", n))
			}
			reset(raw)
			if l.hooks.Refused != nil {
				l.hooks.Refused()
			}
			return nil
		}
		l.open-- // the victim's place is the newcomer's
	}
	l.open++
	l.peak = max(l.peak, l.open)
	c.elem = l.fresh.PushBack(c)
	l.mu.Unlock()
	if victim != nil {
		wasIdle := victim.evicted
		victim.Conn.Close()
		if l.hooks.Evicted != nil {
			l.hooks.Evicted(wasIdle)
		}
	}
	return c
}

// oldest takes the connection to evict out of its list, under l.mu: the
// oldest fresh one, else the oldest idle one. Its evicted field says which.
func (l *Listener) oldest() *Conn {
	from, wasIdle := &l.fresh, false
	if from.Len() == 0 {
		from, wasIdle = &l.idle, true
	}
	e := from.Front()
	if e == nil {
		return nil
	}
	v := e.Value.(*Conn)
	from.Remove(e)
	v.elem, v.state, v.evicted = nil, gone, wasIdle
	return v
}

// reset closes a connection at once with a reset, so that a refused client
// learns it immediately and leaves no TIME_WAIT behind.
func reset(c net.Conn) {
	if tc, ok := c.(interface{ SetLinger(int) error }); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// Conn is an accepted connection holding a place. Close gives the place back.
type Conn struct {
	net.Conn
	l *Listener
	// Under l.mu:
	state   state
	elem    *list.Element // in l.fresh or l.idle while fresh or idle
	evicted bool          // the victim was idle (not fresh) when evicted
}

// Busy marks a request, tunnel or stream in flight: the connection keeps its
// place until Idle or Close. A nil *Conn (a connection from no bounded
// listener) ignores it, as it does Idle.
func (c *Conn) Busy() {
	if c == nil {
		return
	}
	l := c.l
	l.mu.Lock()
	if c.state == fresh || c.state == idle {
		c.unlist()
		c.state = busy
	}
	l.mu.Unlock()
}

// Idle marks a connection that has served a request and waits for the next:
// it may give up its place to a new connection, the oldest idle first.
func (c *Conn) Idle() {
	if c == nil {
		return
	}
	l := c.l
	l.mu.Lock()
	if c.state == busy {
		c.state = idle
		c.elem = l.idle.PushBack(c)
	}
	l.mu.Unlock()
}

func (c *Conn) unlist() {
	if c.elem == nil {
		return
	}
	if c.state == fresh {
		c.l.fresh.Remove(c.elem)
	} else {
		c.l.idle.Remove(c.elem)
	}
	c.elem = nil
}

// Close closes the connection and gives its place back.
func (c *Conn) Close() error {
	l := c.l
	l.mu.Lock()
	if c.state != gone {
		c.unlist()
		c.state = gone
		l.open--
	}
	l.mu.Unlock()
	return c.Conn.Close()
}

// Unwrap returns the accepted connection.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// Of finds the *Conn beneath the wrappers a connection has gained (peeking,
// TLS, write gathering); nil when it came from no bounded listener.
func Of(c net.Conn) *Conn {
	for c != nil {
		switch v := c.(type) {
		case *Conn:
			return v
		case interface{ Unwrap() net.Conn }:
			c = v.Unwrap()
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// Busy marks c's place busy, if it has one.
func Busy(c net.Conn) {
	if s := Of(c); s != nil {
		s.Busy()
	}
}

// FollowHTTP marks c's place busy or idle as net/http's server reports c's
// state: a ConnState hook.
func FollowHTTP(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateActive:
		Busy(c)
	case http.StateIdle:
		Idle(c)
	}
}

// Idle marks c's place idle, if it has one.
func Idle(c net.Conn) {
	if s := Of(c); s != nil {
		s.Idle()
	}
}
