package proxy

import (
	"net/http"
	"testing"
)

func TestProxyPassesTheQueryUntouched(t *testing.T) {
	seen := make(chan string, 1)
	backend := startBackend(t, func(w http.ResponseWriter, r *http.Request) { seen <- r.URL.RawQuery })
	out := startInProcess(t, backend)
	const query = "a=1;b=2&c=%3B&d"
	resp, err := http.DefaultClient.Do(toWeb(out, "GET", "/search?"+query, nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := <-seen; got != query {
		t.Errorf("backend saw query %q; want %q as the client sent it", got, query)
	}
}
