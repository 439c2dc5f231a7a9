package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestProxyCarriesLargeBodiesStreamsAndContinueThroughItsHTTP1Server(t *testing.T) {
	release := make(chan struct{})
	backend := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			n, err := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%d %v", n, err)
		case "/download":
			w.Write([]byte(strings.Repeat("x", 8<<20)))
		case "/stream":
			w.Write([]byte("first\n"))
			w.(http.Flusher).Flush()
			select {
			case <-release:
				w.Write([]byte("second\n"))
			case <-time.After(10 * time.Second):
				w.Write([]byte("the first line was held back\n"))
			}
		}
	})
	out := startInProcess(t, backend)
	// The client waits for "100 Continue" longer than the whole request may take.
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}, Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	send := func(method, path string, body io.Reader, header http.Header) (*http.Response, string) {
		t.Helper()
		req := toWeb(out, method, path, body)
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s body: %v", method, path, err)
		}
		return resp, string(b)
	}

	// 8 MiB up, of unknown length (chunked), and 8 MiB down.
	if _, got := send("POST", "/upload", io.MultiReader(strings.NewReader(strings.Repeat("y", 8<<20))), nil); got != fmt.Sprint(8<<20, " <nil>") {
		t.Errorf("upload: backend saw %q", got)
	}
	if _, got := send("GET", "/download", nil, nil); len(got) != 8<<20 {
		t.Errorf("download: %d bytes", len(got))
	}
	// With Expect: 100-continue the body still arrives whole.
	if _, got := send("POST", "/upload", strings.NewReader("hello"), http.Header{"Expect": {"100-continue"}}); got != "5 <nil>" {
		t.Errorf("100-continue upload: backend saw %q", got)
	}

	// A streamed response reaches the client before the backend ends it.
	resp, err := client.Do(toWeb(out, "GET", "/stream", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); line != "first\n" || err != nil {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(release)
	if rest, _ := io.ReadAll(br); string(rest) != "second\n" {
		t.Errorf("rest %q", rest)
	}
}

func TestProxyAbortsAResponseTheBackendCutShort(t *testing.T) {
	backend := startBackend(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		// A chunked body that stops in the middle: no last chunk.
		brw.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		brw.Flush()
	})
	out := startInProcess(t, backend)
	resp, err := http.DefaultClient.Do(toWeb(out, "GET", "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Errorf("client read %q and a clean end; a cut-short response must end in an error", b)
	}
}
