package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestLoopbackOnlyRefusesPodNetworkClients(t *testing.T) {
	h := loopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("secret")) }))
	for remote, want := range map[string]int{
		"127.0.0.1:5000":        200,
		"[::1]:5000":            200,
		"[::ffff:127.0.0.1]:80": 200,
		"10.1.2.3:5000":         403,
		"[fd00::1]:5000":        403,
		"garbage":               403,
	} {
		// Headers a client controls change nothing: only the TCP peer counts.
		for _, hdr := range [][2]string{{}, {"X-Forwarded-For", "127.0.0.1"}, {"X-Real-IP", "127.0.0.1"}, {"Forwarded", "for=127.0.0.1"}, {"Host", "127.0.0.1:4191"}} {
			r := httptest.NewRequest("GET", "/config_dump", nil)
			r.RemoteAddr = remote
			if hdr[0] == "Host" {
				r.Host = hdr[1]
			} else if hdr[0] != "" {
				r.Header.Set(hdr[0], hdr[1])
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != want {
				t.Errorf("client %s with %v: %d, want %d", remote, hdr, w.Code, want)
			}
		}
	}
}

func TestParseTCPForward(t *testing.T) {
	f, err := ParseTCPForward("15432=db:5432")
	if err != nil || f.Listen != "127.0.0.1:15432" || f.Service.String() != "db:5432" {
		t.Fatalf("got %+v, %v", f, err)
	}
	for _, bad := range []string{"", "15432", "=db:1", "1=db", "1=db:0"} {
		if _, err := ParseTCPForward(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCookieValue(t *testing.T) {
	v, ok := cookieValue([]string{"a=1; session=\"abc\"; b=2"}, "session")
	if !ok || v != "abc" {
		t.Fatalf("got %q %v", v, ok)
	}
	if _, ok := cookieValue([]string{"a=1"}, "session"); ok {
		t.Fatal("found a missing cookie")
	}
}
