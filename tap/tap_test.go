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

// A port-forward to a deleted pod ends mid-stream: that is the proxy
// going away, and said so.
func TestAStreamCutMidwayIsAProxyThatWentAway(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(adminapi.TapEvent{Type: "request", ID: 1})
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // the chunked body never ends
		}
	}))
	defer srv.Close()
	ws := []inventory.Workload{{Kind: "deploy", Name: "web", Instances: []inventory.Instance{{Name: "web-1", Admin: strings.TrimPrefix(srv.URL, "http://")}}}}
	var warned []string
	err := Stream(context.Background(), ws, Filter{}, 0, func(Event) error { return nil }, func(err error) { warned = append(warned, err.Error()) })
	if err != nil || len(warned) != 1 || !strings.Contains(warned[0], "web-1") || !strings.Contains(warned[0], "ended the tap") {
		t.Errorf("Stream: %v, warnings %q; want one warning that web-1's tap ended", err, warned)
	}
}

func TestATapWhoseEveryProxyFailsIsAnError(t *testing.T) {
	ws := []inventory.Workload{{Kind: "deploy", Name: "web", Instances: []inventory.Instance{{Name: "web-1", Admin: "127.0.0.1:1"}}}}
	err := Stream(context.Background(), ws, Filter{}, 0, func(Event) error { return nil }, nil)
	if err == nil || !strings.Contains(err.Error(), "web-1") {
		t.Fatalf("Stream with no proxy reachable: %v; want an error naming the instance", err)
	}
}

func TestTopCountsFinishedRequestsByPathAndNamesCallersByIdentity(t *testing.T) {
	web := "spiffe://cluster.local/ns/shop/sa/web"
	top := &Top{Names: NamesFor([]inventory.Workload{
		{Kind: "deploy", Name: "web", Identity: web},
		{Kind: "deploy", Name: "a", Identity: "spiffe://cluster.local/ns/shop/sa/default"},
		{Kind: "deploy", Name: "b", Identity: "spiffe://cluster.local/ns/shop/sa/default"},
	})}
	end := func(dir, client, src, path string, status int, grpc string, ms float64) Event {
		return Event{TapEvent: adminapi.TapEvent{Type: "end", Direction: dir, ClientID: client, Source: src, Method: "GET",
			Authority: "api.shop:80", Path: path, Status: status, GRPCStatus: grpc, DurationMS: ms}, Instance: "api-1"}
	}
	for _, e := range []Event{
		end("inbound", web, "10.0.0.5:4242", "/items", 200, "", 3),
		end("inbound", web, "10.0.0.6:4242", "/items", 503, "", 9),
		end("inbound", web, "10.0.0.5:4243", "/items", 200, "", 1),
		end("inbound", "", "10.0.0.9:5555", "/health", 200, "", 0.5),
		end("inbound", "spiffe://cluster.local/ns/shop/sa/default", "10.0.0.7:1", "/grpc.X/Y", 200, "14", 2),
		end("outbound", "", "127.0.0.1:1", "/up", 200, "", 4),
		{TapEvent: adminapi.TapEvent{Type: "request", Direction: "inbound", Path: "/items"}},
	} {
		top.Add(e)
	}
	var out strings.Builder
	if err := RenderTop(&out, top.Rows(), 0); err != nil {
		t.Fatal(err)
	}
	want := `SOURCE                                      DESTINATION   METHOD   PATH        COUNT   BEST    WORST   LAST    SUCCESS
deploy/web                                  api-1         GET      /items      3       1.0ms   9.0ms   1.0ms   66.67%
10.0.0.9                                    api-1         GET      /health     1       0.5ms   0.5ms   0.5ms   100.00%
api-1                                       api.shop:80   GET      /up         1       4.0ms   4.0ms   4.0ms   100.00%
spiffe://cluster.local/ns/shop/sa/default   api-1         GET      /grpc.X/Y   1       2.0ms   2.0ms   2.0ms   0.00%
`
	if out.String() != want {
		t.Errorf("mesh top:\n%s\nwant\n%s", out.String(), want)
	}
}
