package demo

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"
)

// The demo's applications. They know nothing of the mesh: web calls api
// and auth by name through its proxy (HTTP_PROXY style), as any app would.

// apiHandler answers after a delay: one replica is fast, one is slow.
func apiHandler(name string, base time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(base + time.Duration(rand.Int64N(int64(base/2+1))))
		fmt.Fprintf(w, `{"served_by":%q,"items":[1,2,3]}`, name)
	})
}

// authHandler refuses a few percent of requests with a server error.
func authHandler(failureRate float64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond + time.Duration(rand.Int64N(int64(2*time.Millisecond))))
		if rand.Float64() < failureRate {
			http.Error(w, "auth backend hiccup", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, `{"ok":true}`)
	})
}

// webHandler calls auth, then api, through its proxy.
func webHandler(outbound string) http.Handler {
	proxyURL := &url.URL{Scheme: "http", Host: outbound}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), MaxIdleConnsPerHost: 32}}
	call := func(ctx context.Context, u string) (int, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
		if err != nil {
			return 0, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code, err := call(r.Context(), "http://auth/check"); err != nil || code != 200 {
			http.Error(w, "auth failed", http.StatusBadGateway)
			return
		}
		if code, err := call(r.Context(), "http://api/items"+r.URL.Path); err != nil || code != 200 {
			http.Error(w, "api failed", http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "web page %s\n", r.URL.Path)
	})
}

// traffic sends requests to web through the traffic workload's proxy
// until ctx ends; one in ten goes to api directly, which api's policy
// refuses (it admits web alone).
func traffic(ctx context.Context, outbound string, rate int) {
	proxyURL := &url.URL{Scheme: "http", Host: outbound}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), MaxIdleConnsPerHost: 16}}
	paths := []string{"/", "/books", "/books/42", "/authors", "/authors/7"}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	// At most maxInFlight requests at once: a rate the machine cannot keep
	// up with skips ticks instead of piling up requests (and memory) in
	// the proxies.
	const maxInFlight = 64
	slots := make(chan struct{}, maxInFlight)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case slots <- struct{}{}:
		default:
			continue
		}
		go func() {
			defer func() { <-slots }()
			u := "http://web" + paths[rand.IntN(len(paths))]
			if rand.IntN(10) == 0 {
				u = "http://api/internal/report"
			}
			req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
			if err != nil {
				return
			}
			if resp, err := client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
}
