// Package tap streams live requests from proxies' /tap endpoints, merges
// them, and renders them as lines or NDJSON. The filtering happens inside
// the proxies; this package only asks and prints.
package tap

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/proxy/adminapi"
)

// Filter selects requests. The proxies apply the fields; Match, when set,
// is applied here to what they send (for what a proxy cannot tell, such as
// whether an authority names a workload).
type Filter struct {
	Method     string
	PathPrefix string
	Authority  string
	Direction  string
	Match      func(*adminapi.TapEvent) bool
}

// Targets are the workloads a tap of resource reaches, and f completed:
// with to (a workload), only their outbound requests to it.
func Targets(m *inventory.Mesh, resource, to string, f Filter) ([]inventory.Workload, Filter, error) {
	ws, err := m.Select(resource)
	if err != nil {
		return nil, Filter{}, err
	}
	if to != "" {
		dst, err := m.Select(to)
		if err != nil {
			return nil, Filter{}, err
		}
		target := dst[0]
		if target.Service == "" && len(target.Services) == 0 {
			return nil, Filter{}, fmt.Errorf("%s serves no traffic to tap: no Service selects it", target.Ref())
		}
		f.Direction = "outbound"
		f.Match = func(e *adminapi.TapEvent) bool { return target.Serves(e.Authority) }
	}
	return ws, f, nil
}

// Event is a proxy's tap event with where it came from.
type Event struct {
	adminapi.TapEvent
	Workload string `json:"workload"`
	Instance string `json:"instance"`
}

// Stream taps every instance of the workloads until ctx ends or max events
// (0: no limit) were delivered to out. An instance whose tap fails or ends
// (its pod went away) is reported to warn at once, and the others go on;
// Stream fails only when every instance did and none delivered anything.
func Stream(ctx context.Context, ws []inventory.Workload, f Filter, max int, out func(Event) error, warn func(error)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	q := url.Values{}
	for k, v := range map[string]string{"method": f.Method, "path": f.PathPrefix, "authority": f.Authority, "direction": f.Direction} {
		if v != "" {
			q.Set(k, v)
		}
	}
	// A proxy counts what it sends: with a filter of ours after its own,
	// only we can count.
	proxyMax := max
	if f.Match != nil {
		proxyMax = 0
	}
	if proxyMax > 0 {
		q.Set("max", strconv.Itoa(proxyMax))
	}
	events := make(chan Event)
	errs := make(chan error, 64)
	var wg sync.WaitGroup
	for _, w := range ws {
		for _, inst := range w.Instances {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := tapOne(ctx, inst.Admin, q, proxyMax, func(e adminapi.TapEvent) bool {
					if f.Match != nil && !f.Match(&e) {
						return true
					}
					select {
					case events <- Event{TapEvent: e, Workload: w.Ref(), Instance: inst.Name}:
						return true
					case <-ctx.Done():
						return false
					}
				}); err != nil && ctx.Err() == nil {
					err = fmt.Errorf("tapping %s (%s): %w", inst.Name, inst.Admin, err)
					if warn != nil {
						warn(err)
					}
					select {
					case errs <- err:
					default:
					}
				}
			}()
		}
	}
	go func() { wg.Wait(); close(events) }()
	sent := 0
	for e := range events {
		if err := out(e); err != nil {
			return err
		}
		sent++
		if max > 0 && sent >= max {
			return nil
		}
	}
	select {
	case err := <-errs:
		if sent == 0 {
			return err
		}
	default:
	}
	return nil
}

// errStreamEnded is a tap the proxy ended while we still listened.
var errStreamEnded = errors.New("the proxy ended the tap (its pod stopped?)")

// tapOne streams one proxy's tap; its end is an error unless ctx ended or
// the proxy sent the max events it was asked for.
func tapOne(ctx context.Context, admin string, q url.Values, max int, deliver func(adminapi.TapEvent) bool) error {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+admin+"/tap?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		var e adminapi.TapEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("bad tap event: %w", err)
		}
		if !deliver(e) {
			return nil
		}
		n++
	}
	if ctx.Err() != nil || (max > 0 && n >= max) {
		return nil
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	// A stream cut mid-way (the port-forward to a deleted pod ends so) is
	// the proxy going away too.
	return errStreamEnded
}

// Line renders an event as one human-readable line.
func Line(e Event) string {
	tls := "tls=false"
	if e.TLS {
		tls = "tls=true"
	}
	id := ""
	if e.ClientID != "" {
		id = " client_id=" + e.ClientID
	}
	if e.ServerID != "" {
		id = " server_id=" + e.ServerID
	}
	head := fmt.Sprintf("%-3s id=%d %s %s src=%s dst=%s %s%s :method=%s :authority=%s :path=%s",
		abbrev(e.Type), e.ID, e.Instance, e.Direction, e.Source, e.Destination, tls, id, e.Method, e.Authority, e.Path)
	switch e.Type {
	case "response":
		return fmt.Sprintf("%s :status=%d latency=%.3fms", head, e.Status, e.LatencyMS)
	case "end":
		s := fmt.Sprintf("%s :status=%d duration=%.3fms response-length=%dB", head, e.Status, e.DurationMS, e.Bytes)
		if e.GRPCStatus != "" {
			s += " grpc-status=" + e.GRPCStatus
		}
		if e.Error != "" {
			s += fmt.Sprintf(" error=%q", e.Error)
		}
		return s
	}
	return head
}

func abbrev(t string) string {
	switch t {
	case "request":
		return "req"
	case "response":
		return "rsp"
	}
	return t
}
