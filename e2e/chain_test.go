package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// TestGRPCAndWebSocketCrossTwoProxies sends traffic the way a mesh does:
// client -> its proxy's outbound -> the server proxy's inbound -> app.
func TestGRPCAndWebSocketCrossTwoProxies(t *testing.T) {
	grpcApp := startGRPCBackend(t, "app")
	grpcServerProxy := startProxy(t, proxyOpts{discovery: "services: []\n", args: []string{"--inbound-forward", grpcApp}})

	wsApp := startBackend(t, "ws")
	wsApp.handler = wsEcho("")
	wsServerProxy := startProxy(t, proxyOpts{discovery: "services: []\n", args: []string{"--inbound-forward", wsApp.addr}})

	client := startProxy(t, proxyOpts{discovery: discoveryFile(
		service("greeter", 50051, "", "", grpcServerProxy.inbound),
		service("chat", 80, "", "", wsServerProxy.inbound),
	)})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	params := []*testpb.ResponseParameters{{Size: 10}, {Size: 20}, {Size: 30}}
	stream, err := dialGRPC(t, client.outbound, "greeter:50051").StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream across two proxies: %v", err)
		}
		n++
	}
	if n != 3 || stream.Trailer().Get("messages")[0] != "3" {
		t.Fatalf("got %d messages and trailer %v", n, stream.Trailer())
	}

	ws, _, err := websocket.DefaultDialer.Dial("ws://"+client.outbound+"/", http.Header{"Host": {"chat"}})
	if err != nil {
		t.Fatalf("websocket across two proxies: %v", err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3})
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "\x01\x02\x03" {
		t.Fatalf("echo %v, %v", got, err)
	}
}
