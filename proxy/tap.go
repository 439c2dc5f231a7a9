package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshproj/mesh/proxy/adminapi"
)

// This file is live tap: a stream of request, response and end events to
// whoever asks /tap. While nobody taps, the request path pays one atomic
// load.

type tapHub struct {
	active atomic.Int32
	ids    atomic.Uint64
	mu     sync.Mutex
	subs   map[*tapSub]struct{}
}

type tapSub struct {
	filter adminapi.TapFilter
	ch     chan adminapi.TapEvent
}

// on reports whether anyone taps; the request path checks it first.
func (h *tapHub) on() bool { return h.active.Load() > 0 }

// publish hands an event to every matching subscriber that keeps up;
// a slow one misses events rather than slowing traffic.
func (h *tapHub) publish(e adminapi.TapEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.filter.Match(&e) {
			select {
			case s.ch <- e:
			default:
			}
		}
	}
}

func (h *tapHub) subscribe(f adminapi.TapFilter) *tapSub {
	s := &tapSub{filter: f, ch: make(chan adminapi.TapEvent, 1024)}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[*tapSub]struct{}{}
	}
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	h.active.Add(1)
	return s
}

func (h *tapHub) unsubscribe(s *tapSub) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
	h.active.Add(-1)
}

// serveTap streams matching events as NDJSON until the client leaves or
// max events were sent.
func (p *Proxy) serveTap(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := adminapi.TapFilter{Method: q.Get("method"), PathPrefix: q.Get("path"), Authority: q.Get("authority"), Direction: q.Get("direction")}
	max, _ := strconv.Atoi(q.Get("max"))
	sub := p.tap.subscribe(f)
	defer p.tap.unsubscribe(sub)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	enc := json.NewEncoder(w)
	sent := 0
	for {
		select {
		case <-r.Context().Done():
			return
		case e := <-sub.ch:
			if err := enc.Encode(e); err != nil {
				return
			}
			rc.Flush()
			sent++
			if max > 0 && sent >= max {
				return
			}
		}
	}
}

// tapStart publishes a request event and returns its id (0 when nobody taps).
func (p *Proxy) tapStart(r *http.Request, d direction, target string, pr peer) uint64 {
	if !p.tap.on() {
		return 0
	}
	id := p.tap.ids.Add(1)
	p.tap.publish(adminapi.TapEvent{Type: "request", ID: id, Time: time.Now(), Direction: d.String(), Source: r.RemoteAddr,
		Destination: target, TLS: pr.tls, ClientID: pr.clientID, ServerID: pr.serverID,
		Method: r.Method, Authority: r.Host, Path: r.URL.Path})
	return id
}
