package proxy

import (
	"testing"
)

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
