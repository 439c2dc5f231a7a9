package discovery

import (
	"net/http/httptest"
	"testing"
)

func TestRouteMatch(t *testing.T) {
	for _, c := range []struct {
		m      RouteMatch
		target string
		header [2]string
		want   bool
	}{
		{RouteMatch{}, "/anything", [2]string{}, true},
		{RouteMatch{PathType: PathPrefix, Path: "/api"}, "/api", [2]string{}, true},
		{RouteMatch{PathType: PathPrefix, Path: "/api/"}, "/api", [2]string{}, true},
		{RouteMatch{PathType: PathPrefix, Path: "/api"}, "/api/v1", [2]string{}, true},
		{RouteMatch{PathType: PathPrefix, Path: "/api"}, "/apix", [2]string{}, false},
		{RouteMatch{PathType: PathPrefix, Path: "/"}, "/x", [2]string{}, true},
		{RouteMatch{PathType: PathExact, Path: "/api"}, "/api/", [2]string{}, false},
		{RouteMatch{PathType: PathExact, Path: "/api"}, "/api?x=1", [2]string{}, true},
		{RouteMatch{Method: "POST"}, "/", [2]string{}, false},
		{RouteMatch{Headers: []NameValue{{Name: "x-canary", Value: "yes"}}}, "/", [2]string{"X-Canary", "yes"}, true},
		{RouteMatch{Headers: []NameValue{{Name: "x-canary", Value: "yes"}}}, "/", [2]string{"X-Canary", "Yes"}, false},
		{RouteMatch{Headers: []NameValue{{Name: "x-canary", Value: "yes"}}}, "/", [2]string{}, false},
		{RouteMatch{QueryParams: []NameValue{{Name: "v", Value: "2"}}}, "/?v=2&v=3", [2]string{}, true},
		{RouteMatch{QueryParams: []NameValue{{Name: "v", Value: "3"}}}, "/?v=2&v=3", [2]string{}, false},
		{RouteMatch{QueryParams: []NameValue{{Name: "v", Value: ""}}}, "/?w=1", [2]string{}, false},
	} {
		r := httptest.NewRequest("GET", c.target, nil)
		if c.header[0] != "" {
			r.Header.Set(c.header[0], c.header[1])
		}
		if got := c.m.Matches(r); got != c.want {
			t.Errorf("%+v on GET %s %v = %v, want %v", c.m, c.target, c.header, got, c.want)
		}
	}
}

func TestMoreSpecificOrdersAsTheGatewayAPI(t *testing.T) {
	// Each is more specific than every one after it.
	order := []RouteMatch{
		{PathType: PathExact, Path: "/a"},
		{PathType: PathPrefix, Path: "/a/b"},
		{PathType: PathPrefix, Path: "/a", Method: "GET"},
		{PathType: PathPrefix, Path: "/a", Headers: []NameValue{{Name: "h", Value: "1"}, {Name: "i", Value: "2"}}},
		{PathType: PathPrefix, Path: "/a", Headers: []NameValue{{Name: "h", Value: "1"}}},
		{PathType: PathPrefix, Path: "/a", QueryParams: []NameValue{{Name: "q", Value: "1"}}},
		{PathType: PathPrefix, Path: "/a"},
		{},
	}
	for i := range order {
		for j := range order {
			if got, want := MoreSpecific(order[i], order[j]), i < j; got != want {
				t.Errorf("MoreSpecific(%+v, %+v) = %v, want %v", order[i], order[j], got, want)
			}
		}
	}
}

func TestRedirectLocation(t *testing.T) {
	s := func(v string) *string { return &v }
	prefix := RouteMatch{PathType: PathPrefix, Path: "/old"}
	for _, c := range []struct {
		rd         Redirect
		host, path string
		match      RouteMatch
		want       string
	}{
		{Redirect{Hostname: "new.example"}, "web:80", "/a?x=1", RouteMatch{}, "http://new.example/a?x=1"},
		// The request's port stays; a scheme named goes to its own port.
		{Redirect{Hostname: "new.example"}, "web:8080", "/a", RouteMatch{}, "http://new.example:8080/a"},
		{Redirect{Scheme: "https"}, "web:8080", "/a", RouteMatch{}, "https://web/a"},
		{Redirect{Scheme: "https", Port: 8443}, "web", "/a", RouteMatch{}, "https://web:8443/a"},
		// A Host without a port uses the service's.
		{Redirect{}, "web", "/a", RouteMatch{}, "http://web:9000/a"},
		{Redirect{FullPath: s("/b")}, "web:80", "/a?q", RouteMatch{}, "http://web/b?q"},
		{Redirect{PrefixMatch: s("/new")}, "web:80", "/old/a/b", prefix, "http://web/new/a/b"},
		{Redirect{PrefixMatch: s("/")}, "web:80", "/old/a", prefix, "http://web/a"},
		{Redirect{PrefixMatch: s("/")}, "web:80", "/old", prefix, "http://web/"},
		{Redirect{PrefixMatch: s("/new/")}, "web:80", "/old", prefix, "http://web/new"},
	} {
		r := httptest.NewRequest("GET", "http://"+c.host+c.path, nil)
		if got := c.rd.Location(r, c.match, "9000"); got != c.want {
			t.Errorf("%+v of %s%s: %s; want %s", c.rd, c.host, c.path, got, c.want)
		}
	}
}
