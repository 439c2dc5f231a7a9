package tap

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/proxy/adminapi"
)

// fakeProxy serves /tap: n events a few milliseconds apart, then it ends
// the stream (as a proxy whose pod stops does) or, with hold, waits.
func fakeProxy(t *testing.T, n int, hold bool) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		enc := json.NewEncoder(w)
		for i := 1; i <= n; i++ {
			enc.Encode(adminapi.TapEvent{Type: "request", ID: uint64(i), Method: "GET"})
			w.(http.Flusher).Flush()
			time.Sleep(5 * time.Millisecond)
		}
		if hold {
			<-r.Context().Done()
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestAPodGoingAwayMidTapIsReportedAndTheOthersGoOn(t *testing.T) {
	ws := []inventory.Workload{{Kind: "deploy", Name: "web", Instances: []inventory.Instance{
		{Name: "web-1", Admin: fakeProxy(t, 2, false)}, // goes away after 2 events
		{Name: "web-2", Admin: fakeProxy(t, 20, true)},
	}}}
	var mu sync.Mutex
	var warned []string
	got := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := Stream(ctx, ws, Filter{}, 22, func(e Event) error {
		mu.Lock()
		got[e.Instance]++
		mu.Unlock()
		return nil
	}, func(err error) {
		mu.Lock()
		warned = append(warned, err.Error())
		mu.Unlock()
	})
	if err != nil {
		t.Fatalf("Stream: %v; want it to go on with the pod that is left", err)
	}
	if got["web-1"] != 2 || got["web-2"] != 20 {
		t.Errorf("events by instance %v; want 2 from web-1 and all 20 from web-2", got)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "web-1") || !strings.Contains(warned[0], "ended the tap") {
		t.Errorf("warnings %q; want one, that web-1's tap ended", warned)
	}
}

func TestATapWhoseEveryProxyFailsIsAnError(t *testing.T) {
	ws := []inventory.Workload{{Kind: "deploy", Name: "web", Instances: []inventory.Instance{{Name: "web-1", Admin: "127.0.0.1:1"}}}}
	err := Stream(context.Background(), ws, Filter{}, 0, func(Event) error { return nil }, nil)
	if err == nil || !strings.Contains(err.Error(), "web-1") {
		t.Fatalf("Stream with no proxy reachable: %v; want an error naming the instance", err)
	}
}
