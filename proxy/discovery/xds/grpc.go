package xds

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meshproj/mesh/discovery/xdswire"
)

// The ADS stream is a gRPC call, spoken here over net/http's HTTP/2
// client (which the proxy links anyway) rather than with grpc-go: what it needs
// of gRPC is one bidirectional stream of length-prefixed messages and the
// status in the trailers, and grpc-go with the Envoy types cost every
// sidecar several megabytes (bench/README.md, Memory).

const adsPath = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

// maxMessage bounds one response: the directory of every service port of
// a large cluster fits many times over.
const maxMessage = 64 << 20

// grpcStream is one DeltaAggregatedResources call.
type grpcStream struct {
	t      *http.Transport
	body   *io.PipeWriter
	resp   chan result
	r      *bufio.Reader
	res    *http.Response
	cancel context.CancelFunc
}

type result struct {
	res *http.Response
	err error
}

// dialADS starts the call; its response headers are awaited by the first
// Recv, since the controller answers nothing before a request.
func dialADS(ctx context.Context, addr string, tlsCfg *tls.Config, userAgent string) (*grpcStream, error) {
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
		tlsCfg = tlsCfg.Clone()
		tlsCfg.NextProtos = []string{"h2"}
	}
	var protocols http.Protocols
	if tlsCfg == nil {
		protocols.SetUnencryptedHTTP2(true) // prior knowledge, as gRPC does
	} else {
		protocols.SetHTTP2(true)
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Protocols:       &protocols,
		DialContext:     d.DialContext,
		TLSClientConfig: tlsCfg,
		// Pings notice a controller that vanished without closing the
		// connection (its node died), so the proxy moves to another one.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 10 * time.Second},
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	u := url.URL{Scheme: scheme, Host: addr, Path: adsPath}
	req, err := http.NewRequestWithContext(ctx, "POST", u.String(), pr)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", userAgent)
	s := &grpcStream{t: t, body: pw, resp: make(chan result, 1), cancel: cancel}
	go func() {
		res, err := t.RoundTrip(req)
		if err != nil {
			// Nothing reads the requests any more: a Send waiting on the
			// pipe returns.
			pr.CloseWithError(err)
		}
		s.resp <- result{res, err}
	}()
	go func() {
		<-ctx.Done()
		pr.CloseWithError(ctx.Err())
	}()
	return s, nil
}

// Send writes one request message.
func (s *grpcStream) Send(r *xdswire.DeltaRequest) error {
	msg := r.Marshal()
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	_, err := s.body.Write(append(frame, msg...))
	return err
}

// Recv reads one response message, or the call's end as an error.
func (s *grpcStream) Recv() (*xdswire.DeltaResponse, error) {
	if s.res == nil {
		r := <-s.resp
		if r.err != nil {
			return nil, r.err
		}
		s.res = r.res
		if err := grpcHeaders(r.res); err != nil {
			return nil, err
		}
		s.r = bufio.NewReaderSize(r.res.Body, 32<<10)
	}
	var head [5]byte
	if _, err := io.ReadFull(s.r, head[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, grpcStatus(s.res.Trailer)
		}
		return nil, err
	}
	if head[0] != 0 {
		return nil, errors.New("the controller sent a compressed message, which was not asked for")
	}
	n := binary.BigEndian.Uint32(head[1:])
	if n > maxMessage {
		return nil, fmt.Errorf("the controller sent a message of %d bytes (at most %d)", n, maxMessage)
	}
	// Each message gets memory of its own: the resources point into it.
	msg := make([]byte, n)
	if _, err := io.ReadFull(s.r, msg); err != nil {
		return nil, fmt.Errorf("reading a message of %d bytes: %w", n, err)
	}
	return xdswire.ParseDeltaResponse(msg)
}

// Close ends the call and its connection.
func (s *grpcStream) Close() {
	s.cancel()
	s.body.CloseWithError(errors.New("stream closed"))
	if s.res != nil {
		s.res.Body.Close()
	}
	s.t.CloseIdleConnections()
}

// grpcHeaders checks that the answer is a gRPC call going on, or a call
// that ended at once (the status in the headers).
func grpcHeaders(res *http.Response) error {
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("the controller answered HTTP %s", res.Status)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/grpc") {
		return fmt.Errorf("the controller answered with content type %q, not gRPC", ct)
	}
	if res.Header.Get("Grpc-Status") != "" {
		return grpcStatus(res.Header)
	}
	return nil
}

// grpcStatus is the call's end as the controller gave it.
func grpcStatus(h http.Header) error {
	code, msg := h.Get("Grpc-Status"), h.Get("Grpc-Message")
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	switch code {
	case "":
		return errors.New("the controller ended the stream without a status")
	case "0":
		return errors.New("the controller ended the stream")
	}
	return fmt.Errorf("the controller ended the stream: gRPC status %s: %s", code, msg)
}
