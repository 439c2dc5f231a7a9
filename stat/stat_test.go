package stat

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/meshproj/mesh/internal/golden"
	"github.com/meshproj/mesh/inventory"
	"github.com/meshproj/mesh/proxy/adminapi"
	"github.com/meshproj/mesh/proxy/metrics"
)

// buckets makes bucket counts: n requests in the bucket whose bound is ms.
func buckets(pairs ...float64) []uint64 {
	counts := make([]uint64, len(metrics.LatencyBucketsMS)+1)
	for i := 0; i+1 < len(pairs); i += 2 {
		for b, bound := range metrics.LatencyBucketsMS {
			if bound == pairs[i] {
				counts[b] += uint64(pairs[i+1])
			}
		}
	}
	return counts
}

var mesh = &inventory.Mesh{Workloads: []inventory.Workload{
	{Kind: "deploy", Name: "web", Identity: "spiffe://cluster.local/ns/demo/sa/web", Service: "web:80", Instances: []inventory.Instance{{Name: "web-1", Admin: "web-1"}}},
	{Kind: "deploy", Name: "api", Identity: "spiffe://cluster.local/ns/demo/sa/api", Service: "api:80", Instances: []inventory.Instance{{Name: "api-1", Admin: "api-1"}, {Name: "api-2", Admin: "api-2"}}},
	{Kind: "deploy", Name: "auth", Identity: "spiffe://cluster.local/ns/demo/sa/auth", Service: "auth:80", Instances: []inventory.Instance{{Name: "auth-1", Admin: "auth-1"}}},
	{Kind: "deploy", Name: "idle", Instances: []inventory.Instance{{Name: "idle-1", Admin: "idle-1"}}},
}}

// recorded is what the proxies answered, by admin address.
func recorded(_ context.Context, admin string, seconds int) (bool, *adminapi.Stats, error) {
	web := "spiffe://cluster.local/ns/demo/sa/web"
	st := &adminapi.Stats{WindowSeconds: seconds, LatencyBuckets: metrics.LatencyBucketsMS[:], OpenConnections: map[string]int64{"inbound": 1, "outbound": 2}}
	switch admin {
	case "web-1":
		st.Stats = []adminapi.WindowStat{
			{Direction: "inbound", Authority: "web", Requests: 200, Successes: 190, Latency: buckets(10, 150, 20, 40, 50, 10)},
			{Direction: "outbound", Authority: "api:80", Peer: "spiffe://cluster.local/ns/demo/sa/api", Requests: 190, Successes: 190, Latency: buckets(5, 180, 50, 10)},
			{Direction: "outbound", Authority: "auth:80", Peer: "spiffe://cluster.local/ns/demo/sa/auth", Requests: 200, Successes: 190, Latency: buckets(3, 200)},
		}
	case "api-1":
		st.Stats = []adminapi.WindowStat{{Direction: "inbound", Authority: "api", Peer: web, Requests: 170, Successes: 170, Latency: buckets(5, 170)}}
	case "api-2":
		st.Stats = []adminapi.WindowStat{{Direction: "inbound", Authority: "api", Peer: web, Requests: 20, Successes: 20, Latency: buckets(50, 20)}}
	case "auth-1":
		st.Stats = []adminapi.WindowStat{{Direction: "inbound", Authority: "auth", Peer: web, Requests: 200, Successes: 190, Latency: buckets(3, 200)}}
	case "idle-1":
		return false, nil, errors.New("connection refused")
	}
	return true, st, nil
}

func render(t *testing.T, o Options, format string) []byte {
	t.Helper()
	rows, err := Collect(context.Background(), mesh, o, recorded)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Render(&b, rows, format, false); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestGoldenTable(t *testing.T) {
	golden.Check(t, "testdata/table.golden", render(t, Options{}, Table))
}
func TestGoldenWide(t *testing.T) {
	golden.Check(t, "testdata/wide.golden", render(t, Options{}, Wide))
}
func TestGoldenJSON(t *testing.T) {
	golden.Check(t, "testdata/json.golden", render(t, Options{}, JSON))
}
func TestGoldenEdgeTo(t *testing.T) {
	golden.Check(t, "testdata/edge_to.golden", render(t, Options{Resource: "deploy/web", To: "deploy/api"}, Table))
}
func TestGoldenEdgeFrom(t *testing.T) {
	golden.Check(t, "testdata/edge_from.golden", render(t, Options{Resource: "api", From: "deploy/web"}, Table))
}

func TestUnknownResourceNamesTheChoices(t *testing.T) {
	_, err := Collect(context.Background(), mesh, Options{Resource: "deploy/nope"}, recorded)
	if err == nil || err.Error() != `no workload "nope" in the mesh; it has deploy/api, deploy/auth, deploy/idle, deploy/web` {
		t.Fatalf("error = %v", err)
	}
}

func TestQuantileInterpolatesInsideBuckets(t *testing.T) {
	a := aggregate{bounds: []float64{1, 2, 4}, counts: []uint64{0, 10, 10, 0}}
	for q, want := range map[float64]float64{0.5: 2, 0.25: 1.5, 0.75: 3, 1: 4} {
		if got := a.quantile(q); got == nil || *got != want {
			t.Errorf("q%.2f = %v, want %v", q, got, want)
		}
	}
	empty := aggregate{bounds: []float64{1}, counts: []uint64{0, 0}}
	if empty.quantile(0.5) != nil {
		t.Error("quantile of nothing")
	}
}

func TestEdgesNameBothSidesAndWhatEachProved(t *testing.T) {
	for _, c := range []struct{ resource, golden string }{{"", "edges_all"}, {"deploy/api", "edges_api"}} {
		edges, err := Edges(context.Background(), mesh, c.resource, 10, recorded)
		if err != nil {
			t.Fatal(err)
		}
		var table, js bytes.Buffer
		if err := RenderEdges(&table, edges, Table); err != nil {
			t.Fatal(err)
		}
		if err := RenderEdges(&js, edges, JSON); err != nil {
			t.Fatal(err)
		}
		golden.Check(t, "testdata/"+c.golden+".golden", append(table.Bytes(), js.Bytes()...))
	}
}

func TestAnEdgeSeenFromBothSidesIsOneEdge(t *testing.T) {
	edges, err := Edges(context.Background(), mesh, "deploy/auth", 10, recorded)
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 1 || edges[0].Src != "deploy/web" || !edges[0].MTLS || edges[0].Requests != 200 ||
		edges[0].ClientID != "spiffe://cluster.local/ns/demo/sa/web" || edges[0].ServerID != "spiffe://cluster.local/ns/demo/sa/auth" {
		t.Errorf("web -> auth, seen by both proxies: %+v", edges)
	}
}

func TestAnEdgeCountsEveryInstanceOfTheServer(t *testing.T) {
	// api-1 and api-2 served web 170 and 20 calls; web's proxy sent 190.
	m := &inventory.Mesh{Workloads: mesh.Workloads[1:2]}
	edges, err := Edges(context.Background(), m, "", 10, recorded)
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 1 || edges[0].Requests != 190 || edges[0].Src != "spiffe://cluster.local/ns/demo/sa/web" {
		t.Errorf("api's two instances' inbound windows: %+v", edges)
	}
}

// Two workloads share a ServiceAccount: the server's proxy can name the
// caller only by identity, the caller's proxy names itself. The edge is
// shown once, by the caller's name.
func TestAnEdgeAClientNamedIsNotRepeatedUnderItsSharedIdentity(t *testing.T) {
	shared := "spiffe://cluster.local/ns/demo/sa/default"
	m := &inventory.Mesh{Workloads: []inventory.Workload{
		{Kind: "deploy", Name: "a", Identity: shared, Instances: []inventory.Instance{{Name: "a-1", Admin: "a-1"}}},
		{Kind: "deploy", Name: "b", Identity: shared, Instances: []inventory.Instance{{Name: "b-1", Admin: "b-1"}}},
		{Kind: "deploy", Name: "api", Identity: "spiffe://cluster.local/ns/demo/sa/api", Service: "api:80", Instances: []inventory.Instance{{Name: "api-1", Admin: "api-1"}}},
	}}
	fetch := func(_ context.Context, admin string, seconds int) (bool, *adminapi.Stats, error) {
		st := &adminapi.Stats{WindowSeconds: seconds, LatencyBuckets: metrics.LatencyBucketsMS[:]}
		switch admin {
		case "a-1":
			st.Stats = []adminapi.WindowStat{{Direction: "outbound", Authority: "api:80", Peer: "spiffe://cluster.local/ns/demo/sa/api", Requests: 10, Successes: 10}}
		case "api-1":
			st.Stats = []adminapi.WindowStat{{Direction: "inbound", Authority: "api", Peer: shared, Requests: 10, Successes: 10}}
		}
		return true, st, nil
	}
	edges, err := Edges(context.Background(), m, "deploy/api", 10, fetch)
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 1 || edges[0].Src != "deploy/a" || edges[0].Dst != "deploy/api" {
		t.Errorf("edges %+v; want deploy/a -> deploy/api alone", edges)
	}
}

// A client's outbound traffic by route: a split's two backends merged
// under its route, a header route, requests no route matched, and a
// service without routes.
func TestGoldenRoutes(t *testing.T) {
	m := &inventory.Mesh{Workloads: []inventory.Workload{
		{Kind: "deploy", Name: "front", Instances: []inventory.Instance{{Name: "front-1", Admin: "front-1"}, {Name: "front-2", Admin: "front-2"}}},
		{Kind: "deploy", Name: "web-v2", Service: "web-v2:80", Instances: []inventory.Instance{{Name: "web-v2-1", Admin: "web-v2-1"}}},
	}}
	fetch := func(_ context.Context, admin string, seconds int) (bool, *adminapi.Stats, error) {
		st := &adminapi.Stats{WindowSeconds: seconds, LatencyBuckets: metrics.LatencyBucketsMS[:]}
		switch admin {
		case "front-1":
			st.Stats = []adminapi.WindowStat{
				{Direction: "outbound", Authority: "web:80", Route: "shop/split/1", Requests: 90, Successes: 90, Latency: buckets(5, 90)},
				{Direction: "outbound", Authority: "web-v2:80", Route: "shop/split/1", Requests: 10, Successes: 5, Latency: buckets(50, 10)},
				{Direction: "outbound", Authority: "web:80", Route: "shop/split/0", Requests: 20, Successes: 20, Latency: buckets(10, 20)},
				{Direction: "outbound", Authority: "web:80", Requests: 3, Successes: 0, Latency: buckets(1, 3)},
				{Direction: "outbound", Authority: "auth:80", Requests: 40, Successes: 40, Latency: buckets(3, 40)},
				{Direction: "inbound", Authority: "front", Requests: 500, Successes: 500, Latency: buckets(3, 500)},
			}
		case "front-2":
			st.Stats = []adminapi.WindowStat{
				{Direction: "outbound", Authority: "web:80", Route: "shop/split/1", Requests: 100, Successes: 100, Latency: buckets(5, 100)},
			}
		}
		return true, st, nil
	}
	for name, o := range map[string]Options{"routes": {Resource: "deploy/front"}, "routes_to": {Resource: "deploy/front", To: "deploy/web-v2"}} {
		rows, err := Routes(context.Background(), m, o, fetch)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := RenderRoutes(&b, rows, Table); err != nil {
			t.Fatal(err)
		}
		golden.Check(t, "testdata/"+name+".golden", b.Bytes())
	}
}
